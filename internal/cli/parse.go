package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// durationSyntax is how every duration flag of the plugin is written.
const durationSyntax = "such as 30d, 1d12h, 90m or 45s (units y, w, d, h, m, s, ms, largest first)"

// parseDuration reads every duration flag of the plugin (--grace, --by,
// --within, --expires-in, --timeout) with one syntax: Prometheus's, which
// adds days, weeks and years to Go's units ("30d", "1d12h", "90m"). Go's own
// output ("1h0m0s") reads too. Negative durations are refused.
func parseDuration(s string) (time.Duration, error) {
	d, err := model.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		if strings.Contains(err.Error(), "out of range") {
			return 0, fmt.Errorf("%q is too long", s)
		}
		return 0, fmt.Errorf("%q is not a duration %s", s, durationSyntax)
	}
	return time.Duration(d), nil
}

// formatDuration writes a duration back in the same syntax: "30d", "1h".
func formatDuration(d time.Duration) string { return model.Duration(d).String() }

// durationValue is a pflag.Value for the plugin's durations.
type durationValue struct {
	d   *time.Duration
	set bool
}

func (v *durationValue) String() string {
	if v.d == nil {
		return ""
	}
	return formatDuration(*v.d)
}

func (v *durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.d, v.set = d, true
	return nil
}

func (v *durationValue) Type() string { return "duration" }
