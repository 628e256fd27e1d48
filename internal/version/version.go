// Package version names the build of Keyward's binaries, the manager and the
// kubectl plugin alike. Version and Revision are stamped at link time by
// `make image` and `make release` (docs/operations.md, "Releases"):
//
//	go build -ldflags "-X keyward.dev/keyward/internal/version.Version=v0.3.0 \
//	  -X keyward.dev/keyward/internal/version.Revision=<commit>"
//
// An unstamped build (go build, go run, go install) reports "dev", or the
// module version go install recorded, and the commit Go recorded from the
// checkout, if any.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Stamped at link time; see the package comment.
var (
	Version  = "dev"
	Revision = ""
)

// Info is what a binary reports about its build.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the build's Info, filling what was not stamped from the build
// information the Go toolchain embedded.
func Get() Info {
	info := Info{Version: Version, Revision: Revision, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	build, ok := debug.ReadBuildInfo()
	if info.Version == "dev" && ok && build.Main.Version != "" && build.Main.Version != "(devel)" {
		info.Version = build.Main.Version // go install keyward.dev/keyward/cmd/kubectl-keyward@v0.3.0
	}
	if info.Revision == "" {
		info.Revision = vcsRevision(build, ok)
	}
	return info
}

// String is the one line `--version` prints.
func (i Info) String() string {
	return fmt.Sprintf("%s (revision %s, %s, %s)", i.Version, i.Revision, i.GoVersion, i.Platform)
}

// vcsRevision is the commit the Go toolchain embedded (with a "-dirty" suffix
// for a modified tree), or "unknown".
func vcsRevision(build *debug.BuildInfo, ok bool) string {
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range build.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// LDFlags is the -ldflags value that stamps version and revision (shared by
// hack/release and documented for hand builds).
func LDFlags(version, revision string) string {
	const pkg = "keyward.dev/keyward/internal/version"
	return fmt.Sprintf("-s -w -X %s.Version=%s -X %s.Revision=%s", pkg, version, pkg, revision)
}
