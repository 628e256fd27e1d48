//go:build chaos

package chaos

import (
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"keyward.dev/keyward/internal/devenv/controlplane"
	"keyward.dev/keyward/test/harness/testenv"
)

// apiserverPID finds this test process's own kube-apiserver (envtest starts
// it as a child).
func apiserverPID() int {
	GinkgoHelper()
	bin, err := controlplane.BinDir(testenv.RepoRoot())
	Expect(err).NotTo(HaveOccurred())
	pids := controlplane.ChildProcesses(filepath.Join(bin, "kube-apiserver"))
	Expect(pids).To(HaveLen(1), "this suite's kube-apiserver")
	return pids[0]
}

// freezeAPIServer stops this suite's kube-apiserver with SIGSTOP and
// returns the function that resumes it; it also runs at cleanup, so a
// failing spec never leaves the control plane frozen.
func freezeAPIServer() (resume func()) {
	GinkgoHelper()
	pid := apiserverPID()
	Expect(syscall.Kill(pid, syscall.SIGSTOP)).To(Succeed())
	resumed := false
	resume = func() {
		if !resumed {
			resumed = true
			Expect(syscall.Kill(pid, syscall.SIGCONT)).To(Succeed())
		}
	}
	DeferCleanup(resume)
	return resume
}

var _ = Describe("API server outage: kube-apiserver stopped (SIGSTOP) for 8 s mid-run", func() {
	It("is ridden out by the manager, and its verifier answers from its cache throughout", func() {
		const (
			ns     = "outage"
			outage = 8 * time.Second
		)
		tenant(ns, 50)
		m := startManager(freeAddr(), freeAddr())
		DeferCleanup(m.stop)
		Eventually(m.ready, time.Minute, 200*time.Millisecond).Should(BeTrue())
		Expect(env.Client.Create(ctx, newKey(ns, "before"))).To(Succeed())
		before := activeKey(ns, "before", time.Minute)

		By("stopping kube-apiserver")
		resume := freezeAPIServer()
		end := time.NewTimer(outage)
		tick := time.NewTicker(200 * time.Millisecond)
		answers, wrong := 0, 0
	poll:
		for {
			select {
			case <-end.C:
				break poll
			case <-tick.C:
				answers++
				if r := verifyKey(m.verify, before.Plaintext()); r != "ok" {
					wrong++
				}
			}
		}
		tick.Stop()
		resume()
		Expect(answers).To(BeNumerically(">=", 20))
		Expect(wrong).To(BeZero(), "the verifier refused a good key %d of %d times during the outage", wrong, answers)

		By("the same manager process carries on: a key created after the outage is issued")
		Expect(m.session.ExitCode()).To(Equal(-1), "the manager exited during the outage")
		Expect(env.Client.Create(ctx, newKey(ns, "after"))).To(Succeed())
		start := time.Now()
		activeKey(ns, "after", time.Minute)
		Expect(m.session.ExitCode()).To(Equal(-1))
		Expect(m.restarts).To(BeZero())
		Expect(verifyKey(m.verify, before.Plaintext())).To(Equal("ok"))
		AddReportEntry("outage: outages ridden out", fmt.Sprintf("1 outage of %v, %d verifier answers during it (all ok), a new key issued %v after it, no restart",
			outage, answers, time.Since(start).Round(100*time.Millisecond)))
	})
})
