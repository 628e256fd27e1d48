package verify_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/verify"
	"keyward.dev/keyward/test/harness/testenv"
)

// The names docs/gateways.md uses, which the test replaces with loopback addresses.
const (
	docListen   = "listen 8080;"
	docVerifier = "http://keyward-verifier.keyward-system.svc:8082"
	docUpstream = "http://backend:8080"
)

// nginxBlocks returns the two ```nginx blocks of docs/gateways.md: the
// server block and keyward_auth.conf.
func nginxBlocks() (server, include string) {
	GinkgoHelper()
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "gateways.md"))
	Expect(err).NotTo(HaveOccurred())
	blocks := regexp.MustCompile("(?s)```nginx\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	Expect(len(blocks)).To(BeNumerically(">=", 2), "docs/gateways.md shows the server block and keyward_auth.conf")
	return blocks[0][1], blocks[1][1]
}

func replaceOnce(s, old, new string) string {
	GinkgoHelper()
	Expect(strings.Count(s, old)).To(Equal(1), "the recipe in docs/gateways.md has %q once", old)
	return strings.Replace(s, old, new, 1)
}

func freePort() int {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var _ = Describe("End to end with a real NGINX doing auth_request", Ordered, func() {
	var (
		nginxURL string
		k        keys
	)

	BeforeAll(func() {
		bin, err := exec.LookPath("nginx")
		if err != nil {
			bin = "/usr/sbin/nginx"
		}
		_, err = os.Stat(bin)
		Expect(err).NotTo(HaveOccurred(), "NGINX is needed (Debian package nginx; .ci/run installs it)")

		// The upstream echoes what it received from NGINX.
		upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for _, h := range verify.IdentityHeaders {
				w.Header().Set("Echo-"+h, r.Header.Get(h))
			}
			saw := "no"
			if r.Header.Get("Authorization") != "" || r.Header.Get("X-API-Key") != "" {
				saw = "yes"
			}
			w.Header().Set("Echo-Saw-Key", saw)
			w.Header().Set("Echo-Method", r.Method)
			_, _ = io.WriteString(w, "upstream\n")
		}))
		DeferCleanup(upstream.Close)

		dir := GinkgoT().TempDir()
		for _, d := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
			Expect(os.Mkdir(filepath.Join(dir, d), 0o700)).To(Succeed())
		}
		port := freePort()
		server, include := nginxBlocks()
		server = replaceOnce(server, docListen, fmt.Sprintf("listen 127.0.0.1:%d;", port))
		server = replaceOnce(server, docVerifier, verifyURL)
		include = replaceOnce(include, docUpstream, upstream.URL)
		conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, server)
		Expect(os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dir, "keyward_auth.conf"), []byte(include), 0o600)).To(Succeed())

		cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
		cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
			}
			if log, err := os.ReadFile(filepath.Join(dir, "error.log")); err == nil {
				fmt.Fprintf(GinkgoWriter, "nginx error.log:\n%s\n", log)
			}
		})
		nginxURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		Eventually(func() error {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				c.Close()
			}
			return err
		}, timeout, interval).Should(Succeed())

		k = setupKeys()
	})

	type got struct {
		status int
		header http.Header
		body   string
	}
	call := func(method, path, key, ip string) got {
		GinkgoHelper()
		req, err := http.NewRequest(method, nginxURL+path, nil)
		Expect(err).NotTo(HaveOccurred())
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		// A client trying to pass its own identity: the recipe overwrites it.
		req.Header.Set(verify.HeaderOwner, "mallory")
		req.Header.Set("X-Forwarded-For", ip)
		resp, err := httpClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return got{resp.StatusCode, resp.Header, string(b)}
	}

	It("passes an active key to the upstream with the identity headers and without the key", func() {
		r := call("GET", "/orders/1", k.active, nextClientIP())
		Expect(r.status).To(Equal(200))
		Expect(r.body).To(Equal("upstream\n"))
		Expect(r.header.Get("Echo-" + verify.HeaderNamespace)).To(Equal(k.ns))
		Expect(r.header.Get("Echo-" + verify.HeaderApplication)).To(Equal("billing"))
		Expect(r.header.Get("Echo-" + verify.HeaderGroup)).To(Equal("Administrators"))
		Expect(r.header.Get("Echo-" + verify.HeaderTeam)).To(Equal("payments"))
		Expect(r.header.Get("Echo-"+verify.HeaderOwner)).To(Equal("alice"), "the client's own X-Keyward-Owner is overwritten")
		Expect(r.header.Get("Echo-" + verify.HeaderKeyID)).To(Equal(k.activeID))
		Expect(r.header.Get("Echo-" + verify.HeaderScopes)).To(Equal("orders:ReadWrite,reports:ReadOnly"))
		Expect(r.header.Get("Echo-Saw-Key")).To(Equal("no"), "the key does not reach the upstream")
		Expect(call("POST", "/orders/1", k.active, nextClientIP()).status).To(Equal(200))
	})

	It("answers 401 for no, malformed, unknown, inactive, expired, revoked and tenant-disabled keys", func() {
		for name, key := range map[string]string{"none": "", "malformed": k.malformed, "unknown": k.unknown,
			"inactive": k.inactive, "expired": k.expired, "revoked": k.revoked, "tenant disabled": k.disabled} {
			r := call("GET", "/orders/1", key, nextClientIP())
			Expect(r.status).To(Equal(401), name)
			Expect(r.header.Get("WWW-Authenticate")).To(HavePrefix("Bearer"), name)
			Expect(r.body).NotTo(ContainSubstring("upstream"), name)
		}
	})

	It("answers 403 for a wrong network or scope", func() {
		Expect(call("GET", "/orders/1", k.networked, "198.51.100.20").status).To(Equal(200))
		r := call("GET", "/orders/1", k.networked, "203.0.113.20")
		Expect(r.status).To(Equal(403))
		Expect(r.body).To(Equal("network_not_allowed\n"))
		Expect(call("GET", "/reports/2026", k.scoped, nextClientIP()).status).To(Equal(200), "reports: ReadOnly allows GET")
		r = call("POST", "/reports/2026", k.scoped, nextClientIP())
		Expect(r.status).To(Equal(403), "reports: ReadOnly refuses POST")
		Expect(r.body).To(Equal("scope_not_allowed\n"))
		Expect(call("GET", "/reports/2026", k.active, nextClientIP()).status).To(Equal(200))
	})

	It("answers 429 with Retry-After to a client flooding bad keys, and still passes a real key from its address", func() {
		ip := "203.0.113.99"
		statuses := map[int]int{}
		var last got
		for i := 0; i < failureBurst+3; i++ {
			bad, _ := keyformat.Generate()
			last = call("GET", "/orders/1", bad.Plaintext(), ip)
			statuses[last.status]++
		}
		Expect(statuses[401]).To(Equal(failureBurst))
		Expect(statuses[429]).To(Equal(3))
		Expect(last.header.Get("Retry-After")).NotTo(BeEmpty())
		// Every client behind one NGINX can share an address (a NAT, an
		// office): the flooding client never locks out a real key.
		Expect(call("GET", "/orders/1", k.active, ip).status).To(Equal(200))
		Expect(call("GET", "/orders/1", k.active, nextClientIP()).status).To(Equal(200))
	})

	It("sees a revocation at once", func() {
		key := newKey(k.ns, "nginx-rev", "billing", func(a *keyward.AccessKey) {
			a.Spec.ExpiresAt = keyward.NewTimestamp(time.Now().Add(time.Hour))
		})
		p := issued(key)
		Expect(call("GET", "/", p, nextClientIP()).status).To(Equal(200))
		update(key, func(a *keyward.AccessKey) { a.Spec.Revoked = true })
		Eventually(func() int { return call("GET", "/", p, nextClientIP()).status }, time.Second, 10*time.Millisecond).Should(Equal(401))
	})
})
