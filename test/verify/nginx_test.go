package verify_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
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

var _ = Describe("End to end with a real NGINX doing auth_request", Ordered, ContinueOnFailure, func() {
	var (
		nginxURL string
		up       *echoUpstream
		h        hostile
	)

	BeforeAll(func() {
		bin, err := exec.LookPath("nginx")
		if err != nil {
			bin = "/usr/sbin/nginx"
		}
		_, err = os.Stat(bin)
		Expect(err).NotTo(HaveOccurred(), "NGINX is needed (Debian package nginx; .ci/run installs it)")

		up = newEchoUpstream()
		dir := GinkgoT().TempDir()
		for _, d := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
			Expect(os.Mkdir(filepath.Join(dir, d), 0o700)).To(Succeed())
		}
		port := freePort()
		server, include := nginxBlocks()
		server = replaceOnce(server, docListen, fmt.Sprintf("listen 127.0.0.1:%d;", port))
		server = replaceOnce(server, docVerifier, verifyURL)
		include = replaceOnce(include, docUpstream, up.URL)
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
		startGateway(cmd, syscall.SIGQUIT, func() {
			if log, err := os.ReadFile(filepath.Join(dir, "error.log")); err == nil {
				fmt.Fprintf(GinkgoWriter, "nginx error.log:\n%s\n", log)
			}
		})
		nginxURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		waitListening(fmt.Sprintf("127.0.0.1:%d", port))
		h = setupHostile()
	})

	// call sends a GET with the key from the client address src.
	call := func(path, key, src string) (int, http.Header, string) {
		GinkgoHelper()
		req, err := http.NewRequest(http.MethodGet, nginxURL+path, nil)
		Expect(err).NotTo(HaveOccurred())
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := clientFrom(src).Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}

	It("answers 401 with WWW-Authenticate for no, malformed and unknown keys", func() {
		unknown, _ := keyformat.Generate()
		malformed := h.rw[:len(h.rw)-3] + "zzz"
		if malformed == h.rw {
			malformed = h.rw[:len(h.rw)-3] + "yyy"
		}
		for name, key := range map[string]string{"none": "", "malformed": malformed, "unknown": unknown.Plaintext()} {
			status, hdr, body := call("/orders/1", key, nextLoopback(false))
			Expect(status).To(Equal(401), name)
			Expect(hdr.Get("WWW-Authenticate")).To(HavePrefix("Bearer"), name)
			Expect(body).NotTo(ContainSubstring("upstream"), name)
		}
	})

	It("answers 429 with Retry-After to a client flooding bad keys, and still passes that client's valid key", func() {
		src := nextLoopback(false)
		statuses := map[int]int{}
		var last http.Header
		for i := 0; i < failureBurst+3; i++ {
			bad, _ := keyformat.Generate()
			var status int
			status, last, _ = call("/orders/1", bad.Plaintext(), src)
			statuses[status]++
		}
		Expect(statuses[401]).To(Equal(failureBurst))
		Expect(statuses[429]).To(Equal(3))
		Expect(last.Get("Retry-After")).NotTo(BeEmpty())
		// Every client behind one NGINX can share an address (a NAT, an
		// office): the flooding client never locks out a real key.
		status, _, _ := call("/orders/1", h.rw, src)
		Expect(status).To(Equal(200), "a key whose secret matches is never rate_limited")
		// Another client behind the same NGINX is not blocked either.
		bad, _ := keyformat.Generate()
		status, _, _ = call("/orders/1", bad.Plaintext(), nextLoopback(false))
		Expect(status).To(Equal(401))
	})

	It("sees a revocation at once", func() {
		key := newKey(docTenant, "nginx-rev", "orders-api", func(a *keyward.AccessKey) {
			a.Spec.ExpiresAt = keyward.NewTimestamp(time.Now().Add(time.Hour))
		})
		p := issued(key)
		status, _, _ := call("/", p, nextLoopback(false))
		Expect(status).To(Equal(200))
		update(key, func(a *keyward.AccessKey) { a.Spec.Revoked = true })
		Eventually(func() int { s, _, _ := call("/", p, nextLoopback(false)); return s }, time.Second, 10*time.Millisecond).Should(Equal(401))
	})

	It("gives hostile clients nothing: forged methods, access, scope, tenant, addresses, second keys and identity headers", func() {
		runHostile(h, func(r clientReq) gatewayAnswer { return sendThrough(nginxURL, up, r) })
	})
})
