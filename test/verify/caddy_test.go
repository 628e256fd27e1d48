package verify_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"keyward.dev/keyward/internal/keyformat"
)

var _ = Describe("End to end with a real Caddy doing forward_auth", Ordered, ContinueOnFailure, func() {
	var (
		caddyURL string
		up       *echoUpstream
		h        hostile
	)

	BeforeAll(func() {
		bin := gatewayBinary("caddy")
		up = newEchoUpstream()
		dir := GinkgoT().TempDir()
		port := freePort()
		site := docBlocks("Caddy", "caddy")[0]
		site = replaceOnce(site, "\n:8080 {", fmt.Sprintf("\nhttp://127.0.0.1:%d {", port))
		site = replaceOnce(site, docVerifier, verifyURL)
		site = replaceOnce(site, docUpstream, up.URL)
		conf := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tauto_https off\n\tstorage file_system %s\n}\n\n%s", filepath.Join(dir, "data"), site)
		file := filepath.Join(dir, "Caddyfile")
		Expect(os.WriteFile(file, []byte(conf), 0o600)).To(Succeed())

		cmd := exec.Command(bin, "run", "--adapter", "caddyfile", "--config", file)
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		startGateway(cmd, syscall.SIGTERM, nil)
		caddyURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		waitListening(fmt.Sprintf("127.0.0.1:%d", port))
		h = setupHostile()
	})

	It("passes the verifier's 401 and 429 with their headers to the client", func() {
		src := nextLoopback(false)
		var last *http.Response
		statuses := map[int]int{}
		for i := 0; i < failureBurst+2; i++ {
			bad, _ := keyformat.Generate()
			req, err := http.NewRequest(http.MethodGet, caddyURL+"/orders/1", nil)
			Expect(err).NotTo(HaveOccurred())
			req.Header.Set("Authorization", "Bearer "+bad.Plaintext())
			last, err = clientFrom(src).Do(req)
			Expect(err).NotTo(HaveOccurred())
			last.Body.Close()
			statuses[last.StatusCode]++
			if last.StatusCode == 401 {
				Expect(last.Header.Get("WWW-Authenticate")).To(HavePrefix("Bearer"))
			}
		}
		Expect(statuses).To(Equal(map[int]int{401: failureBurst, 429: 2}))
		Expect(last.Header.Get("Retry-After")).NotTo(BeEmpty())
		Expect(sendThrough(caddyURL, up, clientReq{method: "GET", path: "/orders/1", bearer: h.rw}).status).To(Equal(200))
	})

	It("gives hostile clients nothing: forged methods, access, scope, tenant, addresses, second keys and identity headers", func() {
		runHostile(h, func(r clientReq) gatewayAnswer { return sendThrough(caddyURL, up, r) })
	})
})
