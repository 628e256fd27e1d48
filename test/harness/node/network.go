package node

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"k8s.io/client-go/rest"
)

// network makes the node's network namespace and a veth pair: this machine's
// end 10.250.S.1/24, the node's end 10.250.S.2/24, with S free on this
// machine. The namespace has no default route: nothing in it reaches an
// address outside this machine.
func (n *Node) network() error {
	unlock, err := lock()
	if err != nil {
		return err
	}
	defer unlock()
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		return fmt.Errorf("ip addr show: %w", err)
	}
	for s := os.Getpid()%250 + 1; ; s = s%250 + 1 {
		if !strings.Contains(string(out), fmt.Sprintf(" 10.250.%d.", s)) {
			n.subnet = s
			break
		}
		if s == os.Getpid()%250 {
			return fmt.Errorf("no free 10.250.x.0/24 subnet")
		}
	}
	n.HostIP = fmt.Sprintf("10.250.%d.1", n.subnet)
	n.NodeIP = fmt.Sprintf("10.250.%d.2", n.subnet)
	n.hostVeth = "kwh" + n.id
	peer := "kwn" + n.id
	steps := [][]string{
		{"netns", "add", n.Name},
		{"link", "add", n.hostVeth, "type", "veth", "peer", "name", peer, "netns", n.Name},
		{"addr", "add", n.HostIP + "/24", "dev", n.hostVeth},
		{"link", "set", n.hostVeth, "up"},
		{"-n", n.Name, "addr", "add", n.NodeIP + "/24", "dev", peer},
		{"-n", n.Name, "link", "set", peer, "up"},
		{"-n", n.Name, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run("ip", s...); err != nil {
			return err
		}
	}
	return nil
}

// lock serialises the choice of a subnet between test processes.
func lock() (func(), error) {
	f, err := os.OpenFile("/run/"+prefix+"lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { _ = f.Close() }, nil
}

// startProxy forwards TCP from the host end of the veth pair to the API
// server (which listens on loopback, out of the node's reach).
func (n *Node) startProxy(cfg *rest.Config) error {
	u, err := url.Parse(cfg.Host)
	if err != nil {
		return err
	}
	n.apiTarget = u.Host
	n.proxy, err = net.Listen("tcp", net.JoinHostPort(n.HostIP, "0"))
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := n.proxy.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", n.apiTarget)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return nil
}

// RouteService makes ip:port (a Service's ClusterIP) reach target (an
// address on this machine's end of the veth pair) from the node's bridged
// Pods, as kube-proxy would: a DNAT rule in the node's namespace, forwarding
// there, and a route on this machine back to the Pods' subnet over the veth.
func (n *Node) RouteService(ip string, port int, target string) error {
	steps := [][]string{
		{"ip", "netns", "exec", n.Name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
		{"ip", "netns", "exec", n.Name, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", ip + "/32", "-p", "tcp",
			"--dport", itoa(port), "-j", "DNAT", "--to-destination", target},
	}
	if !n.routed {
		steps = append(steps, []string{"ip", "route", "replace", n.PodSubnet(), "via", n.NodeIP, "dev", n.hostVeth})
		n.routed = true
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// PodSubnet is the bridged Pods' subnet, inside the node's namespace.
func (n *Node) PodSubnet() string { return fmt.Sprintf("10.251.%d.0/24", n.subnet) }
