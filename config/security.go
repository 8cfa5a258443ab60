package config

import (
	"fmt"
	"os"
)

// TLS is a cluster's TLS settings (security protocols SSL and SASL_SSL).
type TLS struct {
	Enabled bool `koanf:"enabled"`
	// CAFile verifies the brokers' certificates; empty: the system roots.
	CAFile string `koanf:"caFile"`
	// CertFile and KeyFile are klink's own certificate (mTLS), optional.
	CertFile string `koanf:"certFile"`
	KeyFile  string `koanf:"keyFile"`
	// ServerName overrides the name checked in the brokers' certificates.
	ServerName string `koanf:"serverName"`
	// InsecureSkipVerify turns certificate verification off. klink warns
	// at every start.
	InsecureSkipVerify bool `koanf:"insecureSkipVerify"`
}

// SASL is a cluster's SASL settings (SASL_PLAINTEXT and SASL_SSL). Secrets
// come only from files.
type SASL struct {
	// Mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER; empty:
	// no SASL.
	Mechanism    string `koanf:"mechanism"`
	Username     string `koanf:"username"`
	PasswordFile string `koanf:"passwordFile"`
	// OAUTHBEARER: the client-credentials flow against TokenEndpoint.
	TokenEndpoint    string   `koanf:"tokenEndpoint"`
	ClientID         string   `koanf:"clientID"`
	ClientSecretFile string   `koanf:"clientSecretFile"`
	Scopes           []string `koanf:"scopes"`
}

// SASL mechanisms klink speaks.
const (
	MechPlain       = "PLAIN"
	MechScram256    = "SCRAM-SHA-256"
	MechScram512    = "SCRAM-SHA-512"
	MechOAuthBearer = "OAUTHBEARER"
)

// checkSecurity checks a cluster's tls and sasl blocks; files must exist
// and be readable (their contents are read when klink connects).
func checkSecurity(path string, t TLS, s SASL) []FieldError {
	var errs []FieldError
	add := func(p, format string, args ...any) {
		errs = append(errs, FieldError{p, fmt.Sprintf(format, args...)})
	}
	file := func(p, name string) {
		if name == "" {
			return
		}
		f, err := os.Open(name)
		if err != nil {
			add(p, "%v", err)
			return
		}
		f.Close()
	}
	tp := path + ".tls"
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify) {
		add(tp+".enabled", "tls settings are given but tls.enabled is false")
	}
	file(tp+".caFile", t.CAFile)
	file(tp+".certFile", t.CertFile)
	file(tp+".keyFile", t.KeyFile)
	if (t.CertFile == "") != (t.KeyFile == "") {
		add(tp+".certFile", "certFile and keyFile go together (mTLS)")
	}
	sp := path + ".sasl"
	switch s.Mechanism {
	case "":
		if s.Username != "" || s.PasswordFile != "" || s.TokenEndpoint != "" {
			add(sp+".mechanism", "required when sasl settings are given (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)")
		}
	case MechPlain, MechScram256, MechScram512:
		if s.Username == "" {
			add(sp+".username", "required for %s", s.Mechanism)
		}
		if s.PasswordFile == "" {
			add(sp+".passwordFile", "required for %s (secrets come only from files)", s.Mechanism)
		}
		file(sp+".passwordFile", s.PasswordFile)
	case MechOAuthBearer:
		if s.TokenEndpoint == "" {
			add(sp+".tokenEndpoint", "required for OAUTHBEARER")
		}
		if s.ClientID == "" {
			add(sp+".clientID", "required for OAUTHBEARER")
		}
		if s.ClientSecretFile == "" {
			add(sp+".clientSecretFile", "required for OAUTHBEARER (secrets come only from files)")
		}
		file(sp+".clientSecretFile", s.ClientSecretFile)
	default:
		add(sp+".mechanism", "%q: use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER", s.Mechanism)
	}
	return errs
}
