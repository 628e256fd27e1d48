package verify

import (
	"net/http"
	"net/netip"

	"keyward.dev/keyward/internal/verify/wire"
)

// The wire-level helpers live in package wire (standard library only, for
// quick fuzzing); these names keep the verifier's code short.

// TrustedProxies are the networks whose forwarding headers are believed.
type TrustedProxies = wire.TrustedProxies

// ParseTrustedProxies parses the --trusted-proxies flag.
func ParseTrustedProxies(s string) (TrustedProxies, error) { return wire.ParseTrustedProxies(s) }

// AddrAllowed reports whether addr lies in one of the allowed networks.
func AddrAllowed(networks []string, addr netip.Addr) bool { return wire.AddrAllowed(networks, addr) }

// ClientAddr is the client behind a request that reached us from peer.
func ClientAddr(peer netip.Addr, xff []string, xRealIP string, trusted TrustedProxies) netip.Addr {
	return wire.ClientAddr(peer, xff, xRealIP, trusted)
}

// ParseHop parses one forwarding hop.
func ParseHop(s string) (netip.Addr, bool) { return wire.ParseHop(s) }

// PeerAddr parses an http.Request.RemoteAddr.
func PeerAddr(remote string) netip.Addr { return wire.PeerAddr(remote) }

// KeyFrom reads the presented key from the request headers.
func KeyFrom(h http.Header, extra string) string { return wire.KeyFrom(h, extra) }
