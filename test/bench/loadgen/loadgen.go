// Package loadgen is the load generator the verifier and token benchmarks
// share (test/bench/verify, test/bench/token): servers on loopback that
// record their own durations, a bounded concurrent client loop, and
// writing a section of docs/benchmarks.md. Development tooling only.
package loadgen

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Recorder keeps server-side durations.
type Recorder struct {
	d []time.Duration
	n atomic.Int64
}

// NewRecorder keeps up to max durations (and some slack).
func NewRecorder(max int) *Recorder { return &Recorder{d: make([]time.Duration, max+1024)} }

// Add records one server-side duration.
func (r *Recorder) Add(d time.Duration) {
	if i := r.n.Add(1) - 1; int(i) < len(r.d) {
		r.d[i] = d
	}
}

// Sorted returns a copy of the recorded durations (the caller sorts).
func (r *Recorder) Sorted() []time.Duration {
	n := min(int(r.n.Load()), len(r.d))
	return slices.Clone(r.d[:n])
}

// Timed wraps h so that each request's duration is recorded in rec.
func Timed(h http.Handler, rec *Recorder) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.ServeHTTP(w, r)
		rec.Add(time.Since(start))
	})
}

// ServeHTTP serves h on a free loopback port and returns its base URL.
func ServeHTTP(h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = (&http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}).Serve(ln) }()
	return "http://" + ln.Addr().String()
}

// Result is one load run: how many requests, how many failed, how long it
// took, and the client- and server-side durations.
type Result struct {
	Requests, Failures int64
	Elapsed            time.Duration
	Client, Server     []time.Duration
}

// RPS is the throughput of the run.
func (r Result) RPS() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// Merge adds o to r (runs done in slices).
func (r Result) Merge(o Result) Result {
	return Result{Requests: r.Requests + o.Requests, Failures: r.Failures + o.Failures, Elapsed: r.Elapsed + o.Elapsed,
		Client: append(r.Client, o.Client...), Server: append(r.Server, o.Server...)}
}

// Load runs do from workers goroutines for at most d and at most max
// calls, so every run is bounded in time and count.
func Load(workers int, d time.Duration, max int, rec *Recorder, do func() bool) Result {
	if rec != nil {
		rec.n.Store(0)
	}
	var (
		count, failures atomic.Int64
		wg              sync.WaitGroup
		mu              sync.Mutex
		client          []time.Duration
	)
	deadline := time.Now().Add(d)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, max/workers+1)
			for time.Now().Before(deadline) && count.Add(1) <= int64(max) {
				t := time.Now()
				if !do() {
					failures.Add(1)
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			client = append(client, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := Result{Requests: int64(len(client)), Failures: failures.Load(), Elapsed: elapsed, Client: client}
	if rec != nil {
		r.Server = rec.Sorted()
	}
	return r
}

// Pct is the p-quantile of sorted s.
func Pct(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// US formats d in microseconds.
func US(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d.Nanoseconds())/1000) }

// WriteSection replaces (or appends) the section of path that starts with
// heading (a "## " line), up to the next "## " heading.
func WriteSection(path, heading, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(old)
	if doc == "" {
		doc = "# Benchmarks\n\n"
	}
	re := regexp.MustCompile(`(?ms)^` + regexp.QuoteMeta(heading) + `\n.*?(^## |\z)`)
	if loc := re.FindStringSubmatchIndex(doc); loc != nil {
		doc = doc[:loc[0]] + section + doc[loc[2]:]
	} else {
		if !strings.HasSuffix(doc, "\n\n") {
			doc = strings.TrimRight(doc, "\n") + "\n\n"
		}
		doc += section
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// Loadavg is the machine's load average, for the report.
func Loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
