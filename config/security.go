package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
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
			// The name quoted: it may hold anything, a line break too.
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			add(p, "%q: %v", name, err)
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

// NetworkLinks are tunnels to sources in networks klink cannot route to
// (see package netlink): endpoints klink dials out through, and services it
// runs for other klinks.
type NetworkLinks struct {
	Endpoints []NetworkLinkEndpoint `koanf:"endpoints"`
	Services  []NetworkLinkService  `koanf:"services"`
}

// NetworkLinkEndpoint is a tunnel to a network link service; a link's
// source.networkLink names it.
type NetworkLinkEndpoint struct {
	Name    string `koanf:"name"`
	Service struct {
		Address    string `koanf:"address"`
		ServerName string `koanf:"serverName"`
	} `koanf:"service"`
	// TLS: caFile verifies the service; certFile and keyFile are this
	// endpoint's certificate, which carries its identity
	// (klink://<environment>/<network>). All three are required.
	TLS TLS `koanf:"tls"`
}

// NetworkLinkService is a service run for endpoints in other networks.
type NetworkLinkService struct {
	Name   string `koanf:"name"`
	Listen string `koanf:"listen"`
	// TLS: certFile and keyFile are the service's certificate; caFile
	// signs the endpoints' certificates. All three are required.
	TLS    TLS `koanf:"tls"`
	Accept struct {
		Networks     []string `koanf:"networks"`
		Environments []string `koanf:"environments"`
	} `koanf:"accept"`
	// Source is the cluster whose brokers the service may dial (its
	// bootstrap and the brokers it advertises), plus Allow.
	Source struct {
		Bootstrap []string `koanf:"bootstrap"`
		TLS       TLS      `koanf:"tls"`
		SASL      SASL     `koanf:"sasl"`
	} `koanf:"source"`
	Allow []string `koanf:"allow"`
}

func checkNetworkLinks(n NetworkLinks, links []Link) []FieldError {
	var errs []FieldError
	add := func(p, format string, args ...any) {
		errs = append(errs, FieldError{p, fmt.Sprintf(format, args...)})
	}
	names := map[string]bool{}
	for i, e := range n.Endpoints {
		p := fmt.Sprintf("networkLinks.endpoints[%d]", i)
		if e.Name == "" {
			add(p+".name", "required")
		} else if names[e.Name] {
			add(p+".name", "%q is used twice", e.Name)
		}
		names[e.Name] = true
		if err := checkHostPort(e.Service.Address); err != nil {
			add(p+".service.address", "%v", err)
		}
		if !e.TLS.Enabled || e.TLS.CAFile == "" || e.TLS.CertFile == "" {
			add(p+".tls", "enabled, caFile, certFile and keyFile are required: the service accepts endpoints by their certificate")
		}
		errs = append(errs, checkSecurity(p, e.TLS, SASL{})...)
	}
	for i, s := range n.Services {
		p := fmt.Sprintf("networkLinks.services[%d]", i)
		if s.Name == "" {
			add(p+".name", "required")
		}
		if err := checkListen(s.Listen); err != nil || s.Listen == "off" {
			add(p+".listen", "a host:port to listen on")
		}
		if !s.TLS.Enabled || s.TLS.CAFile == "" || s.TLS.CertFile == "" {
			add(p+".tls", "enabled, caFile (of the endpoints' certificates), certFile and keyFile are required")
		}
		errs = append(errs, checkSecurity(p, s.TLS, SASL{})...)
		if len(s.Accept.Networks)+len(s.Accept.Environments) == 0 {
			add(p+".accept", "list at least one network or environment (nothing is accepted otherwise)")
		}
		errs = append(errs, checkBootstrap(p+".source.bootstrap", s.Source.Bootstrap)...)
		errs = append(errs, checkSecurity(p+".source", s.Source.TLS, s.Source.SASL)...)
		for j, a := range s.Allow {
			if err := checkHostPort(a); err != nil {
				add(fmt.Sprintf("%s.allow[%d]", p, j), "%v", err)
			}
		}
	}
	for i, l := range links {
		if l.Source.NetworkLink != "" && !names[l.Source.NetworkLink] {
			add(fmt.Sprintf("links[%d].source.networkLink", i), "%q is not one of networkLinks.endpoints", l.Source.NetworkLink)
		}
	}
	return errs
}

// checkLinkMode checks a link's source-initiated settings.
func checkLinkMode(lp string, l Link) []FieldError {
	var errs []FieldError
	add := func(p, format string, args ...any) {
		errs = append(errs, FieldError{p, fmt.Sprintf(format, args...)})
	}
	switch l.LinkMode {
	case "", LinkModeDestination, LinkModeSource:
	default:
		add(lp+".linkMode", "%q: use DESTINATION or SOURCE", l.LinkMode)
	}
	switch l.ConnectionMode {
	case "", ConnectionOutbound, ConnectionInbound:
	default:
		add(lp+".connectionMode", "%q: use OUTBOUND or INBOUND", l.ConnectionMode)
	}
	needTLS := func(p string, t TLS) {
		if !t.Enabled || t.CAFile == "" || t.CertFile == "" {
			add(p, "enabled, caFile, certFile and keyFile are required: both sides authenticate with certificates")
		}
		errs = append(errs, checkSecurity(strings.TrimSuffix(p, ".tls"), t, SASL{})...)
	}
	switch {
	case l.IsSource():
		if err := checkHostPort(l.Destination.Address); err != nil {
			add(lp+".destination.address", "%v (source mode dials the destination-side klink)", err)
		}
		needTLS(lp+".destination.tls", l.Destination.TLS)
		if len(l.MirrorTopics) > 0 || l.MirrorTopicOptions.AutoCreateTopics.Enabled {
			add(lp+".mirrorTopics", "a SOURCE-mode link relays only: mirror topics, filters and sync settings live on the destination side")
		}
		if l.ConnectionMode == ConnectionInbound {
			add(lp+".connectionMode", "INBOUND is the destination side's; a SOURCE-mode link dials out")
		}
	case l.IsInbound():
		if err := checkListen(l.Inbound.Listen); err != nil || l.Inbound.Listen == "off" || l.Inbound.Listen == "" {
			add(lp+".inbound.listen", "a host:port to listen on for the source side")
		}
		needTLS(lp+".inbound.tls", l.Inbound.TLS)
		if len(l.Inbound.Accept.Networks)+len(l.Inbound.Accept.Environments) == 0 {
			add(lp+".inbound.accept", "list the source side's network or environment")
		}
	}
	if (l.IsSource() || l.IsInbound()) && l.Source.NetworkLink != "" {
		add(lp+".source.networkLink", "a source-initiated link is its own tunnel")
	}
	return errs
}
