// Package netlink carries klink's Kafka connections to source clusters in
// networks klink cannot route to. A network link service runs in the
// source's network: it listens with TLS, requires a client certificate,
// takes the connecting endpoint's identity (environment and network id)
// from that certificate, accepts only endpoints on its accept list, and
// dials only the source cluster's brokers (its bootstrap addresses, the
// brokers it advertises, and an explicit allow list): it is never an open
// proxy. An endpoint runs inside klink: it keeps one TLS connection to the
// service and multiplexes every Kafka connection over it (yamux), so the
// brokers' advertised addresses are dialed from inside their network and
// nothing is rewritten.
//
// The protocol is small. After the TLS handshake the service writes one
// line, "OK <identity>" or "REFUSED <reason>". Then the endpoint opens a
// yamux stream per Kafka connection and writes the target "host:port\n";
// the service answers "OK\n" and relays bytes, or "ERR <reason>\n" and
// closes the stream.
package netlink
