package netlink

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// Identity is who an endpoint is: the environment and the network it runs
// in, as its certificate says (a URI SAN klink://<environment>/<network>).
type Identity struct {
	Environment string
	Network     string
}

func (id Identity) String() string { return "klink://" + id.Environment + "/" + id.Network }

// IdentityOf reads the identity from a verified client certificate; never
// from anything the endpoint merely claims.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	for _, u := range cert.URIs {
		if u.Scheme != "klink" {
			continue
		}
		env, network := u.Host, strings.Trim(u.Path, "/")
		if env == "" || network == "" || strings.Contains(network, "/") {
			return Identity{}, fmt.Errorf("certificate URI %q is not klink://<environment>/<network>", u)
		}
		return Identity{Environment: env, Network: network}, nil
	}
	return Identity{}, errors.New("the client certificate has no klink://<environment>/<network> URI")
}

// Accept is a service's accept list: an endpoint is accepted when its
// network or its environment is listed.
type Accept struct {
	Networks     []string
	Environments []string
}

// Allows reports whether the list accepts the identity, and if not, why.
func (a Accept) Allows(id Identity) error {
	for _, n := range a.Networks {
		if n == id.Network {
			return nil
		}
	}
	for _, e := range a.Environments {
		if e == id.Environment {
			return nil
		}
	}
	return fmt.Errorf("%s: neither network %s nor environment %s is on the accept list", id, id.Network, id.Environment)
}
