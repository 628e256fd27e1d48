//go:build chaos

package chaos

import (
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
)

func (m *managerProc) running() bool { return m.session.ExitCode() == -1 }

// roles waits until exactly one of two running managers leads, and returns
// it and the other.
func roles(a, b *managerProc) (leader, standby *managerProc) {
	GinkgoHelper()
	Eventually(func() bool {
		return a.running() && b.running() && a.leads() != b.leads()
	}, 2*time.Minute, 200*time.Millisecond).Should(BeTrue(), "exactly one of the two managers leads")
	if a.leads() {
		return a, b
	}
	return b, a
}

// kubelet restarts a manager process when it exits, after a backoff that
// doubles from 1 s up to 8 s: the kubelet's CrashLoopBackOff, in seconds
// rather than up to five minutes.
type kubelet struct {
	m        *managerProc
	backoff  time.Duration
	due      time.Time // when the exited process is restarted; zero while it runs
	exits    []exit
	restarts int
}

type exit struct {
	at     time.Time
	reason string // "leader election lost", "API server unreachable at start", or "other"
}

// exited is the running process's exit channel (nil while it waits for
// its restart).
func (k *kubelet) exited() <-chan struct{} {
	if !k.due.IsZero() {
		return nil
	}
	return k.m.session.Exited
}

// tend notes an exit (and schedules the restart) or restarts the process
// once its backoff is over.
func (k *kubelet) tend() {
	GinkgoHelper()
	now := time.Now()
	if k.due.IsZero() {
		if k.m.running() {
			return
		}
		out := string(k.m.session.Err.Contents()) + string(k.m.session.Out.Contents())
		reason := "other"
		switch {
		case strings.Contains(out, "leader election lost"):
			reason = "leader election lost"
		case strings.Contains(out, "unable to set up") || strings.Contains(out, "unable to create manager"):
			reason = "API server unreachable at start"
		}
		k.exits = append(k.exits, exit{at: now, reason: reason})
		k.backoff = min(max(2*k.backoff, time.Second), 8*time.Second)
		k.due = now.Add(k.backoff)
		return
	}
	if now.Before(k.due) {
		return
	}
	k.m.restart()
	k.restarts++
	k.due = time.Time{}
}

// upAndReady keeps tending until the process runs and is ready.
func (k *kubelet) upAndReady(within time.Duration) {
	GinkgoHelper()
	Eventually(func() bool {
		k.tend()
		return k.due.IsZero() && k.m.running() && k.m.ready()
	}, within, 250*time.Millisecond).Should(BeTrue(), "the restarted manager runs and is ready")
}

func (k *kubelet) reasons() string {
	counts := map[string]int{}
	for _, e := range k.exits {
		counts[e.reason]++
	}
	var out []string
	for r, n := range counts {
		out = append(out, fmt.Sprintf("%d× %s", n, r))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// prober asks one verifier about known keys and checks every answer, and
// its readiness at every round. Keys are compared, never printed.
// superviseUntil acts as the kubelet for kl's manager and probes the
// verifier four times a second until done delivers.
func superviseUntil[T any](done <-chan T, kl *kubelet, p *prober) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-kl.exited():
			kl.tend()
		case <-tick.C:
			kl.tend()
			p.round()
		}
	}
}

type prober struct {
	addr    string
	m       *managerProc
	good    keyformat.Key // Active: "ok"
	revoked keyformat.Key // revoked before the outage: "revoked"
	forged  keyformat.Key // the good key's ID with another secret: "unknown"

	rounds, answers, notReady int
	wrong                     map[string]int // "want/got" → count (reasons only)
}

// round asks about the good and the revoked key, and every 8th round about
// the forged one (a wrong secret counts against the client address in the
// rate limiter, 1/s with a burst of 20, so it is asked at most every 2 s).
func (p *prober) round() {
	p.rounds++
	ask := func(k keyformat.Key, want string) {
		p.answers++
		if got := verifyKey(p.addr, k.Plaintext()); got != want {
			if p.wrong == nil {
				p.wrong = map[string]int{}
			}
			p.wrong[want+"/"+got]++
		}
	}
	ask(p.good, "ok")
	ask(p.revoked, "revoked")
	if p.rounds%8 == 1 {
		ask(p.forged, "unknown")
	}
	if !p.m.ready() {
		p.notReady++
	}
}

func (p *prober) expectAllCorrect(during string) {
	GinkgoHelper()
	Expect(p.answers).To(BeNumerically(">=", 20), "verifier answers %s", during)
	Expect(p.wrong).To(BeEmpty(), "wrong verifier answers (want/got: count) of %d %s", p.answers, during)
	Expect(p.notReady).To(BeZero(), "the non-leader was not ready at %d of %d probes %s", p.notReady, p.rounds, during)
}

var _ = Describe("API server outages with two managers and leader election", Ordered, func() {
	const (
		nsLong    = "outage-long"
		nsRestart = "outage-restart"
	)
	var (
		a, b          *managerProc
		good, revoked keyformat.Key
		forged        keyformat.Key
	)
	BeforeAll(func() {
		le := []string{"--leader-elect", "--leader-election-namespace=default"}
		a = startManager(freeAddr(), freeAddr(), le...)
		DeferCleanup(func() { a.stop() })
		b = startManager(freeAddr(), freeAddr(), le...)
		DeferCleanup(func() { b.stop() })
		Eventually(func() bool { return a.ready() && b.ready() }, time.Minute, 200*time.Millisecond).Should(BeTrue())

		tenant(nsLong, 25)
		Expect(env.Client.Create(ctx, newKey(nsLong, "good"))).To(Succeed())
		good = activeKey(nsLong, "good", time.Minute)
		Expect(env.Client.Create(ctx, newKey(nsLong, "revoked"))).To(Succeed())
		revoked = activeKey(nsLong, "revoked", time.Minute)
		Expect(mergePatch(newKey(nsLong, "revoked"), `{"spec":{"revoked":true}}`)).To(Succeed())
		other, err := keyformat.Generate()
		Expect(err).NotTo(HaveOccurred())
		forged = keyformat.Key{ID: good.ID, Secret: other.Secret}
		for _, m := range []*managerProc{a, b} {
			Eventually(func() []string {
				return []string{verifyKey(m.verify, good.Plaintext()), verifyKey(m.verify, revoked.Plaintext())}
			}, time.Minute, 200*time.Millisecond).Should(Equal([]string{"ok", "revoked"}))
		}
	})

	It("60 s of SIGSTOP: the leader exits on its lost lease and is restarted; the non-leader stays ready and answers correctly throughout", func() {
		const (
			outage = 60 * time.Second
			burst  = 20
		)
		leader, standby := roles(a, b)
		p := &prober{addr: standby.verify, m: standby, good: good, revoked: revoked, forged: forged}

		By("a burst of keys being created when kube-apiserver stops")
		var created atomic.Int32
		burstDone := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(burstDone)
			pace := time.NewTicker(100 * time.Millisecond)
			defer pace.Stop()
			deadline := time.Now().Add(3 * time.Minute) // the outage and its aftermath
			for i := 0; i < burst && time.Now().Before(deadline); {
				<-pace.C
				err := env.Client.Create(ctx, newKey(nsLong, fmt.Sprintf("b-%02d", i)))
				if err == nil || apierrors.IsAlreadyExists(err) {
					i++
					created.Add(1)
				}
			}
		}()
		Eventually(created.Load, time.Minute, 20*time.Millisecond).Should(BeNumerically(">=", burst/2))
		issuedBefore := keyIDs(nsLong)

		By(fmt.Sprintf("kube-apiserver stopped (SIGSTOP) for %v", outage))
		resume := freezeAPIServer()
		stoppedAt := time.Now()
		kl := &kubelet{m: leader}
		superviseUntil(time.After(outage), kl, p)
		resume()
		resumedAt := time.Now()
		exitsDuringOutage := len(kl.exits)

		Expect(standby.running()).To(BeTrue(), "the non-leader exited during the outage")
		Expect(kl.exits).NotTo(BeEmpty(), "the leader did not exit during a %v outage (controller-runtime's default is to exit when the lease cannot be renewed within 10 s)", outage)
		Expect(kl.exits[0].reason).To(Equal("leader election lost"))
		leaderExit := kl.exits[0].at.Sub(stoppedAt)
		p.expectAllCorrect("during the outage")

		By("after the resume: the leader's replacement is up, one manager leads, the burst and a key created now are issued")
		kl.upAndReady(2 * time.Minute)
		Eventually(burstDone, time.Minute).Should(BeClosed())
		Expect(created.Load()).To(BeEquivalentTo(burst), "keys of the burst created")
		newLeader, _ := roles(a, b)
		takeover := time.Since(resumedAt)
		for i := 0; i < 5; i++ {
			Expect(env.Client.Create(ctx, newKey(nsLong, fmt.Sprintf("a-%d", i)))).To(Succeed())
		}
		issued := time.Now()
		activeKey(nsLong, "a-0", time.Minute)
		issuedAfter := time.Since(issued)
		st := expectInvariants(nsLong, 25, issuedBefore, 90*time.Second)
		// 25 slots: good, revoked, 20 of the burst and a-0..a-2; a-3 and a-4 wait.
		Expect(st.phases[keyward.PhaseActive]).To(HaveLen(1+burst+3), st.summary())
		Expect(st.phases[keyward.PhaseRevoked]).To(ConsistOf("revoked"))
		Expect(st.phases[keyward.PhaseRejected]).To(ConsistOf("a-3", "a-4"))
		expectAllVerify(a.verify, st.active, 30*time.Second)
		expectAllVerify(b.verify, st.active, 30*time.Second)

		who := "the non-leader"
		if newLeader == leader {
			who = "the restarted leader"
		}
		AddReportEntry("outage: 60 s SIGSTOP with two managers", fmt.Sprintf(
			"the leader exited %v after the stop (leader election lost) and exited %d times in all while the API server was down (%s), restarted %d times; "+
				"the non-leader gave %d verifier answers in %d rounds during the outage, all correct, and was ready at every probe; "+
				"%s leads %v after the resume; a key created then was issued in %v; %s",
			leaderExit.Round(100*time.Millisecond), exitsDuringOutage, kl.reasons(), kl.restarts,
			p.answers, p.rounds, who, takeover.Round(100*time.Millisecond), issuedAfter.Round(100*time.Millisecond), st.summary()))
	})

	It("kube-apiserver stopped and started again on the same etcd during a burst: nothing lost, the verifier answers throughout", func() {
		const (
			burst = 30
			limit = 28
			// Held down between the old process's exit and the new one's
			// start, as in a control-plane upgrade: longer than the lease's
			// renew deadline (10 s), so the leader loses its lease.
			down = 15 * time.Second
		)
		tenant(nsRestart, limit)
		leader, standby := roles(a, b)
		p := &prober{addr: standby.verify, m: standby, good: good, revoked: revoked, forged: forged}
		kl := &kubelet{m: leader}

		By("a burst of key creates, retried while the API server is away")
		var created, apiErrors atomic.Int32
		burstDone := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(burstDone)
			pace := time.NewTicker(150 * time.Millisecond)
			defer pace.Stop()
			deadline := time.Now().Add(3 * time.Minute)
			for i := 0; i < burst && time.Now().Before(deadline); {
				<-pace.C
				err := env.Client.Create(ctx, newKey(nsRestart, fmt.Sprintf("k-%02d", i)))
				if err == nil || apierrors.IsAlreadyExists(err) {
					i++
					created.Add(1)
				} else {
					apiErrors.Add(1)
				}
			}
		}()
		Eventually(created.Load, time.Minute, 20*time.Millisecond).Should(BeNumerically(">=", 10))
		issuedBefore := keyIDs(nsRestart)
		issuedBeforeLong := keyIDs(nsLong)

		By(fmt.Sprintf("kube-apiserver stopped (SIGTERM), held down %v, started again", down))
		type restart struct {
			stopped, started  time.Time
			stopErr, startErr error
		}
		var r restart
		restarted := make(chan struct{})
		begin := time.Now()
		go func() {
			defer close(restarted)
			r.stopErr = env.StopAPIServer()
			r.stopped = time.Now()
			if r.stopErr == nil {
				hold := time.NewTimer(down)
				<-hold.C
				r.startErr = env.StartAPIServer()
			}
			r.started = time.Now()
		}()
		DeferCleanup(func() { // never leave the suite without an API server
			<-restarted
			if r.stopErr == nil && r.startErr != nil {
				Expect(env.StartAPIServer()).To(Succeed())
			}
		})
		superviseUntil(restarted, kl, p)
		Expect(r.stopErr).NotTo(HaveOccurred())
		Expect(r.startErr).NotTo(HaveOccurred())
		Expect(standby.running()).To(BeTrue(), "the non-leader exited while the API server was away")
		p.expectAllCorrect("while kube-apiserver was stopped and started")
		exitsWhileDown := len(kl.exits)

		By("both managers back, one leads, every key issued, the invariants hold")
		kl.upAndReady(2 * time.Minute)
		Eventually(burstDone, time.Minute).Should(BeClosed())
		Expect(created.Load()).To(BeEquivalentTo(burst), "keys of the burst created")
		roles(a, b)
		st := expectInvariants(nsRestart, limit, issuedBefore, 90*time.Second)
		var want []string
		for i := 0; i < limit; i++ {
			want = append(want, fmt.Sprintf("k-%02d", i))
		}
		Expect(st.phases[keyward.PhaseActive]).To(ConsistOf(want), st.summary())
		Expect(st.phases[keyward.PhaseRejected]).To(ConsistOf(fmt.Sprintf("k-%02d", limit), fmt.Sprintf("k-%02d", limit+1)))
		expectInvariants(nsLong, 25, issuedBeforeLong, 30*time.Second)
		expectAllVerify(a.verify, st.active, 30*time.Second)
		expectAllVerify(b.verify, st.active, 30*time.Second)

		AddReportEntry("outage: kube-apiserver stopped and started", fmt.Sprintf(
			"SIGTERM to exit %v, held down %v, new process healthy after %v more: %v without an API server; "+
				"%d creates of the burst refused meanwhile and retried; the leader exited %d times while it was away (%s), restarted %d times; "+
				"the non-leader gave %d verifier answers in %d rounds, all correct, ready at every probe; %s",
			r.stopped.Sub(begin).Round(100*time.Millisecond), down, r.started.Sub(r.stopped.Add(down)).Round(100*time.Millisecond),
			r.started.Sub(begin).Round(100*time.Millisecond), apiErrors.Load(), exitsWhileDown, kl.reasons(), kl.restarts,
			p.answers, p.rounds, st.summary()))
	})
})
