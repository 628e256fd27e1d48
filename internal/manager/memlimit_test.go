package manager

import "testing"

func TestSoftMemoryLimit(t *testing.T) {
	for content, want := range map[string]int64{
		"268435456\n": 241591910, // 256Mi → 90 %
		"max\n":       0,         // no limit
		"":            0,
		"-1":          0,
		"garbage":     0,
	} {
		if got := softMemoryLimit(content); got != want {
			t.Errorf("softMemoryLimit(%q) = %d, want %d", content, got, want)
		}
	}
}
