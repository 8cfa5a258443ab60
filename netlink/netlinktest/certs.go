// Package netlinktest makes the certificates klink's tests need: a CA, a
// server certificate for 127.0.0.1, client certificates, and network link
// endpoint certificates carrying an identity (klink://<env>/<network>).
package netlinktest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Certs is a CA and what it signed, as PEM files in Dir.
type Certs struct {
	Dir    string
	CAFile string
	Pool   *x509.CertPool
	// Server is a certificate for 127.0.0.1, with ServerCert/ServerKey
	// its files.
	Server                tls.Certificate
	ServerCert, ServerKey string
	ClientCert, ClientKey string // a client certificate (CN klink)
	ca                    *x509.Certificate
	caKey                 *ecdsa.PrivateKey
	serial                int64
}

// New makes a CA and a server and a client certificate in a temp dir.
func New(t testing.TB) *Certs {
	t.Helper()
	c := &Certs{Dir: t.TempDir(), serial: 1}
	var err error
	if c.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "klink test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &c.caKey.PublicKey, c.caKey)
	if err != nil {
		t.Fatal(err)
	}
	c.ca, _ = x509.ParseCertificate(der)
	c.Pool = x509.NewCertPool()
	c.Pool.AddCert(c.ca)
	c.CAFile = filepath.Join(c.Dir, "ca.pem")
	if err := os.WriteFile(c.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	c.ServerCert, c.ServerKey = c.Issue(t, "broker", x509.ExtKeyUsageServerAuth)
	if c.Server, err = tls.LoadX509KeyPair(c.ServerCert, c.ServerKey); err != nil {
		t.Fatal(err)
	}
	c.ClientCert, c.ClientKey = c.Issue(t, "klink", x509.ExtKeyUsageClientAuth)
	return c
}

// Issue signs a certificate for 127.0.0.1 (and the URIs) and writes it and
// its key (mode 0600) as <cn>.pem and <cn>.key.
func (c *Certs) Issue(t testing.TB, cn string, usage x509.ExtKeyUsage, uris ...*url.URL) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(c.serial), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, URIs: uris}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca, &key.PublicKey, c.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(c.Dir, cn+".pem"), filepath.Join(c.Dir, cn+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// Endpoint issues a network link endpoint certificate with identity
// klink://<env>/<network>.
func (c *Certs) Endpoint(t testing.TB, env, network string) (certFile, keyFile string) {
	t.Helper()
	return c.Issue(t, network, x509.ExtKeyUsageClientAuth, &url.URL{Scheme: "klink", Host: env, Path: "/" + network})
}

// ClientTLS is a client config trusting the CA, with the given
// certificate (mTLS) if any.
func (c *Certs) ClientTLS(t testing.TB, certFile, keyFile string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: c.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

// Record is the i-th record the isolated source writes, so a test that
// cannot read that source can still check a mirror of it record by record.
func Record(i int) *kgo.Record {
	return &kgo.Record{Key: []byte("key-" + strconv.Itoa(i)), Value: []byte("isolated record " + strconv.Itoa(i)),
		Headers: []kgo.RecordHeader{{Key: "n", Value: []byte(strconv.Itoa(i))}}, Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i))}
}
