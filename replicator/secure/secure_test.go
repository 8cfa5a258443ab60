package secure

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
)

// tokenServer is an OAuth token endpoint (client-credentials) that issues
// tokens valid for expiresIn seconds to the client with secret.
func tokenServer(t *testing.T, secret string, expiresIn int) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		id, sec, ok := r.BasicAuth()
		if err := r.ParseForm(); err != nil || r.Form.Get("grant_type") != "client_credentials" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if !ok {
			id, sec = r.Form.Get("client_id"), r.Form.Get("client_secret")
		}
		if id != "klink" || sec != secret {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		body := map[string]any{"access_token": "tok-" + r.Form.Get("scope"), "token_type": "Bearer"}
		if expiresIn > 0 {
			body["expires_in"] = expiresIn
		}
		json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// OAUTHBEARER's token flow: a token is fetched with the client secret from
// its file, cached while valid, fetched again when it nears expiry; a
// refusal says what the endpoint said, never the secret.
func TestOAuthTokenFlow(t *testing.T) {
	const secret = "client-s3cret-Xy"
	srv, hits := tokenServer(t, secret, 3600)
	s := config.SASL{Mechanism: config.MechOAuthBearer, TokenEndpoint: srv.URL, ClientID: "klink", Scopes: []string{"kafka"}}
	ts := TokenSource(s, secret)
	for range 3 {
		a, err := ts.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if a.Token != "tok-kafka" {
			t.Fatalf("token %q", a.Token)
		}
	}
	if hits.Load() != 1 {
		t.Fatalf("token endpoint called %d times for a valid token, want 1", hits.Load())
	}

	// A token expiring within a minute is refreshed before use.
	short, shortHits := tokenServer(t, secret, 30)
	s.TokenEndpoint = short.URL
	ts = TokenSource(s, secret)
	for range 2 {
		if _, err := ts.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if shortHits.Load() != 2 {
		t.Fatalf("token endpoint called %d times for tokens about to expire, want 2", shortHits.Load())
	}

	// No expires_in: the token is fetched again after a while, not
	// trusted forever (checked by aging it).
	noExp, noExpHits := tokenServer(t, secret, 0)
	s.TokenEndpoint = noExp.URL
	ts = TokenSource(s, secret)
	if _, err := ts.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	src := ts.(*tokenSource)
	tok, _ := src.ts.Token()
	if tok.Expiry.IsZero() || time.Until(tok.Expiry) > 6*time.Minute {
		t.Fatalf("a token without expires_in is kept until %v", tok.Expiry)
	}
	if noExpHits.Load() != 1 {
		t.Fatalf("token endpoint called %d times", noExpHits.Load())
	}

	// A wrong secret: the error names the refusal, not the secret.
	_, err := TokenSource(s, "wrong-"+secret).Token(context.Background())
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), secret) {
		t.Fatalf("wrong secret: %v", err)
	}

	// Through the file, as klink reads it.
	p := filepath.Join(t.TempDir(), "client.secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.TokenEndpoint, s.ClientSecretFile = srv.URL, p
	c, err := New("source of link l", config.TLS{}, s, zap.NewNop())
	if err != nil || c.SASL == nil || c.SASL.Name() != "OAUTHBEARER" {
		t.Fatalf("client %+v, %v", c, err)
	}
}
