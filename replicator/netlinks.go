package replicator

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"sync"

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
	// Source-initiated links: the destination side's inbound endpoints
	// (by link name) and the source side's dial-outs (by link name).
	inbound  map[string]*netlink.Endpoint
	dialouts map[string]*netlink.Dialout
	// stop ends each running piece (by kind and name), for a reload that
	// removes it.
	mu   sync.Mutex
	stop map[string]context.CancelFunc
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
	// SourceLinks are source-initiated links: inbound (this klink is the
	// destination side) or dial-out (the source side).
	SourceLinks []netlink.EndpointStatus `json:"sourceLinks,omitempty"`
}

// ServiceStatus is one network link service and its associations.
type ServiceStatus struct {
	Name         string                      `json:"name"`
	Listen       string                      `json:"listen"`
	Error        string                      `json:"error,omitempty"`
	Associations []netlink.AssociationStatus `json:"associations"`
}

func newNetLinks(cfg config.NetworkLinks, links []config.Link, log *zap.Logger) *netLinks {
	n := &netLinks{endpoints: map[string]*netlink.Endpoint{}, errs: map[string]error{}, inbound: map[string]*netlink.Endpoint{},
		dialouts: map[string]*netlink.Dialout{}, stop: map[string]context.CancelFunc{}}
	for _, l := range links {
		if err := n.addSourceInitiated(l, log); err != nil {
			n.errs["link "+l.Name] = err
			log.Error("source-initiated link not set up", zap.String("link", l.Name), zap.Error(err))
		}
	}
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
		} else if host, _, err := net.SplitHostPort(e.Service.Address); err == nil && tc.ServerName == "" {
			tc.ServerName = host // tls.serverName, if set, stays
		}
		n.endpoints[e.Name] = netlink.NewEndpoint(netlink.EndpointConfig{Name: e.Name, Address: e.Service.Address, TLS: tc}, log)
	}
	for _, s := range cfg.Services {
		n.services = append(n.services, &serviceRun{cfg: s})
	}
	return n
}

// addSourceInitiated sets up a link's side of a source-initiated link.
func (n *netLinks) addSourceInitiated(l config.Link, log *zap.Logger) error {
	switch {
	case l.IsInbound():
		c, err := secure.New("link "+l.Name+" inbound", l.Inbound.TLS, config.SASL{}, log)
		if err != nil {
			return err
		}
		ep, err := netlink.NewInboundEndpoint(netlink.InboundConfig{Name: "link " + l.Name, Listen: l.Inbound.Listen,
			TLS:    &tls.Config{Certificates: c.TLS.Certificates, ClientCAs: c.TLS.RootCAs},
			Accept: netlink.Accept{Networks: l.Inbound.Accept.Networks, Environments: l.Inbound.Accept.Environments}}, log)
		if err != nil {
			return err
		}
		n.inbound[l.Name] = ep
	case l.IsSource():
		c, err := secure.New("link "+l.Name+" destination side", l.Destination.TLS, config.SASL{}, log)
		if err != nil {
			return err
		}
		srcSec, err := secure.New("source of link "+l.Name, l.Source.TLS, l.Source.SASL, log)
		if err != nil {
			return err
		}
		tc := c.TLS.Clone()
		if l.Destination.ServerName != "" {
			tc.ServerName = l.Destination.ServerName
		} else if host, _, err := net.SplitHostPort(l.Destination.Address); err == nil && tc.ServerName == "" {
			tc.ServerName = host // tls.serverName, if set, stays
		}
		n.dialouts[l.Name] = netlink.NewDialout(netlink.DialoutConfig{Name: "link " + l.Name, Address: l.Destination.Address, TLS: tc,
			Bootstrap: l.Source.Bootstrap, Brokers: brokersOf(l.Source.Bootstrap, srcSec)}, log)
	}
	return nil
}

// brokersOf learns the broker addresses a cluster advertises.
func brokersOf(bootstrap []string, sec *secure.Client) func(ctx context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(bootstrap...)}, sec.KgoOpts()...)...)
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
}

// tunnelFor is how a link reaches its source: over its source-initiated
// connection, through its network link, or directly (nil).
func (n *netLinks) tunnelFor(l config.Link) func(context.Context, string, string) (net.Conn, error) {
	if l.IsInbound() {
		if ep, ok := n.inbound[l.Name]; ok {
			return ep.Dial
		}
		err := n.errs["link "+l.Name]
		return func(context.Context, string, string) (net.Conn, error) {
			return nil, fmt.Errorf("the inbound side of link %s is not set up: %v", l.Name, err)
		}
	}
	return n.tunnel(l.Source.NetworkLink)
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
	start := func(key string, run func(context.Context)) {
		c, cancel := context.WithCancel(ctx)
		n.mu.Lock()
		n.stop[key] = cancel
		n.mu.Unlock()
		goFn(func() { run(c) })
	}
	for name, e := range n.endpoints {
		start("endpoint "+name, e.Run)
	}
	for name, e := range n.inbound {
		start("inbound "+name, e.Run)
	}
	for name, d := range n.dialouts {
		start("dialout "+name, d.Run)
	}
	for _, s := range n.services {
		svc, err := startService(s.cfg, log)
		if err != nil {
			s.err = err
			log.Error("network link service not started", zap.String("service", s.cfg.Name), zap.Error(err))
			continue
		}
		s.svc = svc
		start("service "+s.cfg.Name, svc.Serve)
	}
}

// end stops a running piece (removed by a reload).
func (n *netLinks) end(key string) {
	n.mu.Lock()
	cancel := n.stop[key]
	delete(n.stop, key)
	n.mu.Unlock()
	if cancel != nil {
		cancel()
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
	brokers := brokersOf(s.Source.Bootstrap, srcSec)
	tc := &tls.Config{Certificates: c.TLS.Certificates, ClientCAs: c.TLS.RootCAs}
	return netlink.Listen(s.Listen, netlink.ServiceConfig{Name: s.Name, TLS: tc,
		Accept:    netlink.Accept{Networks: s.Accept.Networks, Environments: s.Accept.Environments},
		Bootstrap: s.Source.Bootstrap, Allow: s.Allow, Brokers: brokers}, log)
}

// reload applies what it can at once: new accept lists (services and
// inbound links: whoever is no longer accepted is disconnected), and
// removals (a removed service, source-mode or inbound link stops). Other
// changes wait for a restart and are reported.
func (n *netLinks) reload(cfg config.NetworkLinks, links []config.Link, log *zap.Logger) (applied, notApplied []string) {
	var stop []string
	defer func() { // after the lock: end takes it too
		for _, key := range stop {
			n.end(key)
		}
	}()
	n.mu.Lock() // status reads what this changes
	defer n.mu.Unlock()
	byName := map[string]config.NetworkLinkService{}
	for _, s := range cfg.Services {
		byName[s.Name] = s
	}
	var kept []*serviceRun
	for _, s := range n.services {
		next, ok := byName[s.cfg.Name]
		switch {
		case !ok:
			stop = append(stop, "service "+s.cfg.Name)
			applied = append(applied, fmt.Sprintf("network link service %s: removed (stopped)", s.cfg.Name))
			continue
		case s.svc != nil:
			s.svc.SetAccept(netlink.Accept{Networks: next.Accept.Networks, Environments: next.Accept.Environments})
			cur := s.cfg
			cur.Accept = next.Accept
			if !reflect.DeepEqual(cur, next) {
				notApplied = append(notApplied, fmt.Sprintf("network link service %s: settings other than accept take effect after a restart", s.cfg.Name))
			}
			s.cfg.Accept = next.Accept
		}
		kept = append(kept, s)
	}
	n.services = kept
	for _, s := range cfg.Services {
		if !slices.ContainsFunc(n.services, func(r *serviceRun) bool { return r.cfg.Name == s.Name }) {
			notApplied = append(notApplied, fmt.Sprintf("network link service %s: a new service starts after a restart", s.Name))
		}
	}
	byLink := map[string]config.Link{}
	for _, l := range links {
		byLink[l.Name] = l
	}
	for name, ep := range n.inbound {
		l, ok := byLink[name]
		if !ok || !l.IsInbound() {
			stop = append(stop, "inbound "+name)
			delete(n.inbound, name)
			applied = append(applied, fmt.Sprintf("link %s: inbound side stopped", name))
			continue
		}
		ep.SetAccept(netlink.Accept{Networks: l.Inbound.Accept.Networks, Environments: l.Inbound.Accept.Environments})
	}
	for name := range n.dialouts {
		if l, ok := byLink[name]; !ok || !l.IsSource() {
			stop = append(stop, "dialout "+name)
			delete(n.dialouts, name)
			applied = append(applied, fmt.Sprintf("link %s: source side stopped (no longer relays)", name))
		}
	}
	return applied, notApplied
}

func (n *netLinks) status() *NetworkLinksStatus {
	n.mu.Lock() // reload changes the maps
	defer n.mu.Unlock()
	if len(n.endpoints)+len(n.services)+len(n.errs)+len(n.inbound)+len(n.dialouts) == 0 {
		return nil
	}
	st := &NetworkLinksStatus{}
	for _, e := range n.inbound {
		st.SourceLinks = append(st.SourceLinks, e.Status())
	}
	for _, d := range n.dialouts {
		st.SourceLinks = append(st.SourceLinks, d.Status())
	}
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

// hasSourceInitiated reports whether a link's source-initiated side was set
// up at start.
func (n *netLinks) hasSourceInitiated(link string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.inbound[link]; ok {
		return true
	}
	_, ok := n.dialouts[link]
	return ok
}
