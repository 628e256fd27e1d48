// Package promqlcheck checks the PromQL that Keyward ships: every alert of
// config/prometheus/keyward.rules.yaml and every query of the Grafana
// dashboard config/grafana/keyward.json parses with Prometheus' own parser,
// and every metric it names is one the manager serves (testdata/
// manager-metrics.txt, which the main module's TestMetricInventory (internal/manager) keeps
// equal to the manager's registry). It lives in the tools module because
// Prometheus' parser would upgrade some forty of the main module's
// dependencies (docs/decisions.md).
package promqlcheck

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

const root = "../../.."

func served(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("testdata/manager-metrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			names = append(names, line)
		}
	}
	if len(names) == 0 {
		t.Fatal("testdata/manager-metrics.txt lists no metric")
	}
	return names
}

// metricNames parses expr and returns the metric names of its selectors; a
// selector without a name is an error (it would match any metric).
func metricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	var missing error
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			missing = &selectorError{vs.String()}
		}
		names = append(names, name)
		return nil
	})
	return names, missing
}

type selectorError struct{ selector string }

func (e *selectorError) Error() string { return "selector without a metric name: " + e.selector }

// problems lists what is wrong with expr: it does not parse, names no
// metric, or names one the manager does not serve.
func problems(expr string, known []string) []string {
	names, err := metricNames(expr)
	if err != nil {
		return []string{err.Error()}
	}
	if len(names) == 0 {
		return []string{"names no metric"}
	}
	var out []string
	for _, n := range names {
		if !slices.Contains(known, n) {
			out = append(out, "the manager serves no "+n)
		}
	}
	return out
}

func checkExpr(t *testing.T, where, expr string, known []string) {
	t.Helper()
	for _, p := range problems(expr, known) {
		t.Errorf("%s: %s\n%s", where, p, expr)
	}
}

func TestAlertRules(t *testing.T) {
	known := served(t)
	groups, errs := rulefmt.ParseFile(filepath.Join(root, "config", "prometheus", "keyward.rules.yaml"), false, model.LegacyValidation, parser.NewParser(parser.Options{}), nil)
	for _, err := range errs {
		t.Error(err)
	}
	alerts := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a severity label and summary and description annotations", r.Alert)
			}
			checkExpr(t, r.Alert, r.Expr, known)
		}
	}
	if alerts == 0 {
		t.Fatal("no alert in the rule file")
	}
}

// Grafana's variables, replaced by values of the same kind before parsing.
var grafanaVariables = strings.NewReplacer(
	"$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
	"${job}", "keyward", "$job", "keyward",
)

type panel struct {
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

func TestDashboard(t *testing.T) {
	known := served(t)
	data, err := os.ReadFile(filepath.Join(root, "config", "grafana", "keyward.json"))
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		UID        string  `json:"uid"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &board); err != nil {
		t.Fatal(err)
	}
	queries := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, target := range p.Targets {
				queries++
				checkExpr(t, "panel "+p.Title, grafanaVariables.Replace(target.Expr), known)
			}
		}
	}
	walk(board.Panels)
	if queries == 0 {
		t.Fatal("no query in the dashboard")
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	for _, v := range board.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: not label_values(<selector>, <label>): %s", v.Name, v.Definition)
			continue
		}
		checkExpr(t, "variable "+v.Name, m[1], known)
	}
}

// The check itself: a metric the manager does not serve, a query that does
// not parse and a selector without a metric name are caught.
func TestCheckCatches(t *testing.T) {
	known := []string{"keyward_access_keys", "keyward_verify_requests_total"}
	if p := problems(`sum(rate(keyward_verify_requests_total{result!="ok"}[5m])) / on() group_left sum(keyward_access_keys)`, known); len(p) != 0 {
		t.Fatalf("a good query: %v", p)
	}
	for _, bad := range []string{
		`sum(rate(keyward_verify_requests_totl[5m]))`,
		`sum(rate(keyward_verify_requests_total[5m])`,
		`{job="keyward"}`,
		`vector(1)`,
	} {
		if len(problems(bad, known)) == 0 {
			t.Errorf("not caught: %s", bad)
		}
	}
}
