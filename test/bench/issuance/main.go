// Command issuance measures issuance at scale: it starts its own real
// control plane (test/harness/testenv: etcd, kube-apiserver,
// kube-controller-manager), runs the manager binary built from this
// repository (bin/manager) as a subprocess, and measures issuance of many
// keys against a floor measured in the same run, the latency of one key,
// API writes per key and while idle, expiry on schedule, and memory. It
// writes its section of docs/benchmarks.md (between marker comments, so
// other sections are kept).
//
//	make bench         # full mode: docs/benchmarks.md
//	make bench-quick   # quick mode (small N, one run): bin/bench/benchmarks-quick.md
//
// It exits non-zero only when the harness itself fails, never because a
// target is missed. Every step has a time cap and the whole run a budget,
// so it always terminates.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"keyward.dev/keyward/internal/devenv/controlplane"
)

// plan is what one mode measures.
type plan struct {
	Mode                string
	One                 int // keys in one namespace
	SpreadNS, SpreadPer int // keys over many namespaces
	Latency             int // keys created one at a time
	Idle                time.Duration
	Curve, CurveNS      int // the largest step of the curve, on its own control plane (0: none)
	Unrelated           int // unrelated 10 KiB Secrets for the memory step
	Runs                int
	Budget              time.Duration
	BatchCap            time.Duration // how long one batch may take before it is reported unfinished
	ExpiryCap           time.Duration // how long after expiresAt the expiry step waits
}

var plans = map[string]plan{
	"full": {Mode: "full", One: 1000, SpreadNS: 50, SpreadPer: 100, Latency: 50, Idle: 60 * time.Second,
		Curve: 10000, CurveNS: 100, Unrelated: 10000, Runs: 3, Budget: 30 * time.Minute,
		BatchCap: 5 * time.Minute, ExpiryCap: time.Minute},
	"quick": {Mode: "quick", One: 100, SpreadNS: 4, SpreadPer: 50, Latency: 10, Idle: 15 * time.Second,
		Unrelated: 1000, Runs: 1, Budget: 6 * time.Minute, BatchCap: 90 * time.Second, ExpiryCap: 30 * time.Second},
}

type settings struct {
	plan
	QPS         float64
	Burst       int
	Concurrency int
	ManagerArgs []string
	Writers     int
	Out         string
	Root        string
	ManagerBin  string
	LogDir      string
}

func main() {
	os.Exit(run())
}

func logln(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run() int {
	mode := flag.String("mode", "quick", "quick or full")
	out := flag.String("out", "", "file whose Issuance section is (re)written (default: docs/benchmarks.md in full mode, bin/bench/benchmarks-quick.md in quick mode)")
	qps := flag.Float64("kube-api-qps", 400, "client QPS of the manager and of the floor (passed to the manager as --kube-api-qps)")
	burst := flag.Int("kube-api-burst", 800, "client burst of the manager and of the floor")
	conc := flag.Int("max-concurrent-reconciles", 4, "workers of each manager controller and of the floor")
	managerArgs := flag.String("manager-args", "", "further manager flags, space-separated (e.g. --max-requeue=5m)")
	runs := flag.Int("runs", 0, "runs (default: 3 in full mode, 1 in quick mode)")
	budget := flag.Duration("budget", 0, "time budget of the whole benchmark (default: 30m full, 6m quick); no run starts that would not fit")
	writers := flag.Int("writers", 8, "concurrent client writers creating the keys")
	skipBuild := flag.Bool("skip-build", false, "use bin/manager as it is")
	one := flag.Int("one", 0, "keys created into one namespace (default: 1000 full, 100 quick; up to 100000: past 1000 they are spread over 1000-key Applications and owners, with maxKeys raised to match)")
	batchCap := flag.Duration("batch-cap", 0, "how long one batch may take before it is reported unfinished (default: 5m full, 90s quick)")
	rerender := flag.String("render", "", "only render the section again from results JSON files of earlier invocations, comma-separated (their runs are pooled; to -out, default: the file the last one wrote)")
	flag.Parse()

	if *rerender != "" {
		return renderSaved(*rerender, *out)
	}
	p, ok := plans[*mode]
	if !ok {
		logln("unknown -mode %q (quick or full)", *mode)
		return 2
	}
	if *runs > 0 {
		p.Runs = *runs
	}
	if *budget > 0 {
		p.Budget = *budget
	}
	if *one > 0 {
		if *one > 100000 {
			logln("-one %d: a tenant holds at most 100000 keys", *one)
			return 2
		}
		p.One = *one
	}
	if *batchCap > 0 {
		p.BatchCap = *batchCap
	}
	logf.SetLogger(logr.Discard())

	root, err := controlplane.RepoRoot()
	if err != nil {
		logln("%v", err)
		return 1
	}
	if _, err := controlplane.BinDir(root); err != nil {
		logln("%v", err)
		return 1
	}
	s := settings{plan: p, QPS: *qps, Burst: *burst, Concurrency: *conc, Writers: *writers, Root: root,
		ManagerBin: filepath.Join(root, "bin", "manager"), LogDir: filepath.Join(root, "bin", "bench")}
	s.ManagerArgs = strings.Fields(*managerArgs)
	s.Out = *out
	if s.Out == "" {
		s.Out = filepath.Join(root, "docs", "benchmarks.md")
		if p.Mode == "quick" {
			s.Out = filepath.Join(s.LogDir, "benchmarks-quick.md")
		}
	}
	if err := os.MkdirAll(s.LogDir, 0o755); err != nil {
		logln("%v", err)
		return 1
	}

	ctx, cancel := context.WithTimeout(context.Background(), p.Budget+10*time.Minute) // hard stop
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		logln("%s received: stopping", sig)
		cancel()
	}()

	if !*skipBuild {
		logln("building the manager: go build -o bin/manager .")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", s.ManagerBin, ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			logln("go build failed: %v\n%s", err, out)
			return 1
		}
	}

	b := &bench{settings: s, start: time.Now(), deadline: time.Now().Add(p.Budget)}
	b.env = environment(s)
	res, err := b.runAll(ctx)
	if err != nil {
		logln("harness failed: %v", err)
		return 1
	}
	b.env.LoadEnd = loadavg()
	saved := savedResults{Env: b.env, Settings: s, Runs: res}
	if raw, err := json.MarshalIndent(saved, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(s.LogDir, "results-"+p.Mode+".json"), raw, 0o644)
	}
	report := render(b.env, s, res)
	if err := writeSection(s.Out, report); err != nil {
		logln("writing %s: %v", s.Out, err)
		return 1
	}
	fmt.Println(report)
	logln("done in %s; wrote %s", time.Since(b.start).Round(time.Second), s.Out)
	return 0
}

type bench struct {
	settings
	env      envInfo
	start    time.Time
	deadline time.Time
}

// remaining is the budget left.
func (b *bench) remaining() time.Duration { return time.Until(b.deadline) }

// capFor is how long a step may wait: its cap, within the budget.
func (b *bench) capFor(c time.Duration) time.Duration {
	if r := b.remaining(); r < c {
		return max(r, 10*time.Second)
	}
	return c
}

func (b *bench) runAll(ctx context.Context) ([]*runResult, error) {
	var results []*runResult
	var last time.Duration
	for i := range b.Runs {
		if i > 0 && time.Since(b.start)+last > b.Budget {
			logln("run %d would not fit in the budget of %s (the last run took %s): stopping after %d run(s)", i+1, b.Budget, last.Round(time.Second), i)
			break
		}
		began := time.Now()
		logln("run %d of %d (%s mode)", i+1, b.Runs, b.Mode)
		r, err := b.runOnce(ctx, i+1)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i+1, err)
		}
		r.Took = time.Since(began)
		results = append(results, r)
		last = r.Took
	}
	return results, nil
}

// withCluster starts a fresh control plane, runs f, and always stops it.
func (b *bench) withCluster(ctx context.Context, name string, f func(*cluster) error) (err error) {
	logln("%s: starting a control plane", name)
	c, err := startCluster(b.Root)
	if err != nil {
		return err
	}
	defer func() {
		logln("%s: stopping the control plane", name)
		if e := c.stop(); e != nil && err == nil {
			err = e
		}
	}()
	return f(c)
}

func (b *bench) managerFlags() []string {
	return append([]string{
		fmt.Sprintf("--max-concurrent-reconciles=%d", b.Concurrency),
		fmt.Sprintf("--kube-api-qps=%g", b.QPS),
		fmt.Sprintf("--kube-api-burst=%d", b.Burst),
	}, b.ManagerArgs...)
}

func (b *bench) runOnce(ctx context.Context, n int) (*runResult, error) {
	r := &runResult{}

	// The floor, on a control plane of its own.
	err := b.withCluster(ctx, "floor", func(c *cluster) error {
		obs, err := startObserver(ctx, c.env.Config)
		if err != nil {
			return err
		}
		defer obs.stop()
		fl, err := startFloor(ctx, c.env.Config, b.QPS, b.Burst, b.Concurrency)
		if err != nil {
			return err
		}
		defer fl.stop()
		if r.FloorOne, err = b.batch(ctx, c, obs, "floor-one", 1, b.One, nil); err != nil {
			return err
		}
		r.FloorSpread, err = b.batch(ctx, c, obs, "floor-spread", b.SpreadNS, b.SpreadPer, nil)
		return err
	})
	if err != nil {
		return nil, err
	}

	// The manager.
	err = b.withCluster(ctx, "manager", func(c *cluster) error {
		obs, err := startObserver(ctx, c.env.Config)
		if err != nil {
			return err
		}
		defer obs.stop()
		logln("manager: starting bin/manager %s", strings.Join(b.managerFlags(), " "))
		if err := c.startManager(ctx, b.ManagerBin, filepath.Join(b.LogDir, fmt.Sprintf("run%d", n), "manager.log"), b.managerFlags()); err != nil {
			return err
		}
		if r.Latency, err = b.latency(ctx, c, obs); err != nil {
			return err
		}
		one, err := b.batch(ctx, c, obs, "one", 1, b.One, c)
		if err != nil {
			return err
		}
		r.One = one
		if r.Idle, err = b.idle(ctx, c); err != nil {
			return err
		}
		if r.Expiry, err = b.expiry(ctx, c, obs, one); err != nil {
			return err
		}
		if b.remaining() < 30*time.Second {
			logln("spread: skipped, the budget is spent")
			r.Spread.Skipped = true
		} else if r.Spread, err = b.batch(ctx, c, obs, "spread", b.SpreadNS, b.SpreadPer, c); err != nil {
			return err
		}
		if b.Curve == 0 {
			r.Memory, err = b.unrelated(ctx, c, r.Spread.Keys+r.One.Keys+b.Latency)
			r.Memory.Issued = r.Spread.Issued + r.One.Issued + len(r.Latency.Samples)
		}
		return err
	})
	if err != nil {
		return nil, err
	}

	// The largest step of the curve and the memory step, on a control plane of their own.
	if b.Curve > 0 {
		if b.remaining() < time.Minute {
			logln("curve: %d keys skipped, the budget is spent", b.Curve)
			r.Curve.Skipped = true
			return r, nil
		}
		err = b.withCluster(ctx, "curve", func(c *cluster) error {
			obs, err := startObserver(ctx, c.env.Config)
			if err != nil {
				return err
			}
			defer obs.stop()
			if err := c.startManager(ctx, b.ManagerBin, filepath.Join(b.LogDir, fmt.Sprintf("run%d", n), "manager-curve.log"), b.managerFlags()); err != nil {
				return err
			}
			if r.Curve, err = b.batch(ctx, c, obs, "curve", b.CurveNS, b.Curve/b.CurveNS, c); err != nil {
				return err
			}
			r.Memory, err = b.unrelated(ctx, c, r.Curve.Keys)
			r.Memory.Issued = r.Curve.Issued
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

// savedResults is what bin/bench/results-<mode>.json holds: enough to
// render the section again (-render) without measuring again.
type savedResults struct {
	Env      envInfo
	Settings settings
	Runs     []*runResult
}

// renderSaved renders the section from one or more results files
// (comma-separated); the runs of several invocations with the same settings
// are pooled, and the document names each invocation.
func renderSaved(paths, out string) int {
	var all savedResults
	var invocations []string
	for _, path := range strings.Split(paths, ",") {
		raw, err := os.ReadFile(path)
		if err != nil {
			logln("%v", err)
			return 1
		}
		var saved savedResults
		if err := json.Unmarshal(raw, &saved); err != nil || len(saved.Runs) == 0 {
			logln("%s holds no results: %v", path, err)
			return 1
		}
		all.Env, all.Settings = saved.Env, saved.Settings
		all.Runs = append(all.Runs, saved.Runs...)
		invocations = append(invocations, fmt.Sprintf("%s (%d run(s), `%s`, load average %s → %s)",
			saved.Env.Date, len(saved.Runs), saved.Env.Commit, saved.Env.LoadStart, saved.Env.LoadEnd))
	}
	if len(invocations) > 1 {
		all.Env.Invocations = invocations
		all.Settings.Runs = max(all.Settings.Runs, len(all.Runs))
	}
	if out == "" {
		out = all.Settings.Out
	}
	report := render(all.Env, all.Settings, all.Runs)
	if err := writeSection(out, report); err != nil {
		logln("writing %s: %v", out, err)
		return 1
	}
	logln("rendered %s from %s", out, paths)
	return 0
}
