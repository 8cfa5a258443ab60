package replicator

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/netlink"
	"github.com/klink-io/klink/replicator/secure"
)

// netLinks are the daemon's network link endpoints and services.
type netLinks struct {
	endpoints map[string]*netlink.Endpoint
	errs      map[string]error // endpoints that could not be set up
	services  []*serviceRun
}

type serviceRun struct {
	cfg config.NetworkLinkService
	svc *netlink.Service
	err error
}

// NetworkLinksStatus is what /status shows of network links.
type NetworkLinksStatus struct {
	Endpoints []netlink.EndpointStatus `json:"endpoints,omitempty"`
	Services  []ServiceStatus          `json:"services,omitempty"`
}

// ServiceStatus is one network link service and its associations.
type ServiceStatus struct {
	Name         string                      `json:"name"`
	Listen       string                      `json:"listen"`
	Error        string                      `json:"error,omitempty"`
	Associations []netlink.AssociationStatus `json:"associations"`
}

func newNetLinks(cfg config.NetworkLinks, log *zap.Logger) *netLinks {
	n := &netLinks{endpoints: map[string]*netlink.Endpoint{}, errs: map[string]error{}}
	for _, e := range cfg.Endpoints {
		c, err := secure.New("network link endpoint "+e.Name, e.TLS, config.SASL{}, log)
		if err != nil {
			n.errs[e.Name] = err
			log.Error("network link endpoint not set up", zap.String("networkLink", e.Name), zap.Error(err))
			continue
		}
		tc := c.TLS.Clone()
		if e.Service.ServerName != "" {
			tc.ServerName = e.Service.ServerName
		} else if host, _, err := net.SplitHostPort(e.Service.Address); err == nil {
			tc.ServerName = host
		}
		n.endpoints[e.Name] = netlink.NewEndpoint(netlink.EndpointConfig{Name: e.Name, Address: e.Service.Address, TLS: tc}, log)
	}
	for _, s := range cfg.Services {
		n.services = append(n.services, &serviceRun{cfg: s})
	}
	return n
}

// tunnel is the dial function of the named endpoint ("" : none).
func (n *netLinks) tunnel(name string) func(context.Context, string, string) (net.Conn, error) {
	if name == "" {
		return nil
	}
	if e, ok := n.endpoints[name]; ok {
		return e.Dial
	}
	err := n.errs[name]
	return func(context.Context, string, string) (net.Conn, error) {
		return nil, fmt.Errorf("network link %s is not set up: %v", name, err)
	}
}

// run starts the endpoints and the services; they stop with ctx.
func (n *netLinks) run(ctx context.Context, log *zap.Logger, goFn func(func())) {
	for _, e := range n.endpoints {
		goFn(func() { e.Run(ctx) })
	}
	for _, s := range n.services {
		svc, err := startService(s.cfg, log)
		if err != nil {
			s.err = err
			log.Error("network link service not started", zap.String("service", s.cfg.Name), zap.Error(err))
			continue
		}
		s.svc = svc
		goFn(func() { svc.Serve(ctx) })
	}
}

// startService listens for endpoints with the service's settings.
func startService(s config.NetworkLinkService, log *zap.Logger) (*netlink.Service, error) {
	role := "network link service " + s.Name
	c, err := secure.New(role, s.TLS, config.SASL{}, log)
	if err != nil {
		return nil, err
	}
	srcSec, err := secure.New(role+" source", s.Source.TLS, s.Source.SASL, log)
	if err != nil {
		return nil, err
	}
	brokers := func(ctx context.Context) ([]string, error) {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(s.Source.Bootstrap...)}, srcSec.KgoOpts()...)...)
		if err != nil {
			return nil, err
		}
		defer cl.Close()
		md, err := kadm.NewClient(cl).BrokerMetadata(ctx)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, b := range md.Brokers {
			out = append(out, net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))))
		}
		return out, nil
	}
	tc := &tls.Config{Certificates: c.TLS.Certificates, ClientCAs: c.TLS.RootCAs}
	return netlink.Listen(s.Listen, netlink.ServiceConfig{Name: s.Name, TLS: tc,
		Accept:    netlink.Accept{Networks: s.Accept.Networks, Environments: s.Accept.Environments},
		Bootstrap: s.Source.Bootstrap, Allow: s.Allow, Brokers: brokers}, log)
}

// reload applies new accept lists to running services (same name); other
// network link changes wait for a restart.
func (n *netLinks) reload(cfg config.NetworkLinks) []string {
	var notApplied []string
	byName := map[string]config.NetworkLinkService{}
	for _, s := range cfg.Services {
		byName[s.Name] = s
	}
	for _, s := range n.services {
		if next, ok := byName[s.cfg.Name]; ok && s.svc != nil {
			s.svc.SetAccept(netlink.Accept{Networks: next.Accept.Networks, Environments: next.Accept.Environments})
			s.cfg.Accept = next.Accept
		}
	}
	return notApplied
}

func (n *netLinks) status() *NetworkLinksStatus {
	if len(n.endpoints)+len(n.services)+len(n.errs) == 0 {
		return nil
	}
	st := &NetworkLinksStatus{}
	for _, e := range n.endpoints {
		st.Endpoints = append(st.Endpoints, e.Status())
	}
	for name, err := range n.errs {
		st.Endpoints = append(st.Endpoints, netlink.EndpointStatus{Name: name, State: netlink.Disconnected, Reason: err.Error()})
	}
	for _, s := range n.services {
		ss := ServiceStatus{Name: s.cfg.Name, Listen: s.cfg.Listen, Associations: []netlink.AssociationStatus{}}
		if s.err != nil {
			ss.Error = s.err.Error()
		}
		if s.svc != nil {
			ss.Listen = s.svc.Addr()
			ss.Associations = s.svc.Associations()
		}
		st.Services = append(st.Services, ss)
	}
	return st
}
