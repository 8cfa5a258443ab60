// Package netlink will carry klink's Kafka connections to source clusters in
// isolated networks: a network link service in the target network (TLS with
// client certificates, an accept list of network and environment ids, dialing
// only the source's brokers) and an endpoint inside klink that connects to it.
// Source-initiated links use the same tunnel dialed the other way. Nothing is
// built here yet; see the network-links issue.
package netlink
