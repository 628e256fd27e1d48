//go:build release

// Package release checks a release as `make release` writes it (`make
// release-check` builds one into bin/release-check and runs this with build
// tag "release"): every file is in SHA256SUMS with its sum, the manifests
// name the versioned image, the packaged chart renders what install.yaml
// installs, the krew manifest's sha256 values are the archives', each plugin
// archive holds what krew installs, stamped with the version, the image
// archive is the image built (and labelled) for the version, and the SBOMs
// list the modules linked in. docs/operations.md#releases.
package release

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"keyward.dev/keyward/test/harness/chartrender"
)

var (
	dir       = os.Getenv("RELEASE_DIR")
	version   = os.Getenv("RELEASE_VERSION")
	image     = os.Getenv("RELEASE_IMAGE")
	platforms = strings.Split(os.Getenv("RELEASE_PLATFORMS"), ",")
)

func TestMain(m *testing.M) {
	if dir == "" || version == "" || image == "" || os.Getenv("RELEASE_PLATFORMS") == "" {
		println("set RELEASE_DIR, RELEASE_VERSION, RELEASE_IMAGE and RELEASE_PLATFORMS (make release-check does)")
		os.Exit(2)
	}
	os.Exit(m.Run())
}

func read(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func sha(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// sums reads SHA256SUMS.
func sums(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(read(t, "SHA256SUMS")))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("SHA256SUMS line %q is not sha256sum's format", sc.Text())
		}
		out[name] = sum
	}
	return out
}

func TestChecksumsMatch(t *testing.T) {
	listed := sums(t)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		if e.Name() != "SHA256SUMS" {
			files = append(files, e.Name())
		}
	}
	for _, f := range files {
		want, ok := listed[f]
		if !ok {
			t.Errorf("%s is not in SHA256SUMS", f)
			continue
		}
		if got := sha(read(t, f)); got != want {
			t.Errorf("%s: sha256 %s, SHA256SUMS says %s", f, got, want)
		}
	}
	for f := range listed {
		if !slices.Contains(files, f) {
			t.Errorf("SHA256SUMS lists %s, which the release does not have", f)
		}
	}
	chart := "keyward-" + strings.TrimPrefix(version, "v") + ".tgz"
	for _, want := range []string{"install.yaml", chart, "keyward.yaml", "keyward-manager.cdx.json", "kubectl-keyward.cdx.json"} {
		if !slices.Contains(files, want) {
			t.Errorf("the release lacks %s", want)
		}
	}
}

// images lists every container image the objects name.
func images(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			out = append(out, c.(map[string]any)["image"].(string))
		}
	}
	return out
}

// The packaged chart carries the version, and with its defaults (release
// keyward in keyward-system, the Namespace rendered) installs exactly what
// install.yaml installs, the versioned, registry-qualified image included.
func TestManifestsNameTheVersionedImage(t *testing.T) {
	want := image + ":" + version
	installer, err := chartrender.Objects(string(read(t, "install.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	if got := images(installer); len(got) == 0 || slices.ContainsFunc(got, func(i string) bool { return i != want }) {
		t.Errorf("install.yaml's images %v, want only %s", got, want)
	}
	if strings.Contains(string(read(t, "install.yaml")), "keyward/manager:dev") {
		t.Error("install.yaml still names keyward/manager:dev")
	}

	tgz := filepath.Join(dir, "keyward-"+strings.TrimPrefix(version, "v")+".tgz")
	chrt, err := loader.Load(tgz)
	if err != nil {
		t.Fatal(err)
	}
	if chrt.Metadata.Version != strings.TrimPrefix(version, "v") || chrt.Metadata.AppVersion != version {
		t.Errorf("chart version %s, appVersion %s; want %s, %s", chrt.Metadata.Version, chrt.Metadata.AppVersion, strings.TrimPrefix(version, "v"), version)
	}
	if chrt.Schema == nil {
		t.Error("the packaged chart has no values.schema.json")
	}
	out, err := chartrender.Render(tgz, "keyward", "keyward-system", map[string]any{"namespace": map[string]any{"create": true}})
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := chartrender.Objects(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := images(rendered); len(got) == 0 || slices.ContainsFunc(got, func(i string) bool { return i != want }) {
		t.Errorf("the chart's images %v, want only %s", got, want)
	}
	for _, d := range chartrender.Diff("install.yaml", installer, "the packaged chart", rendered) {
		t.Error(d)
	}
	for _, o := range rendered {
		if v := o.GetLabels()["app.kubernetes.io/version"]; v != version {
			t.Errorf("%s: label app.kubernetes.io/version %q, want %s", chartrender.Key(o), v, version)
		}
	}
}

// krewManifest is the part of keyward.yaml this test reads.
type krewManifest struct {
	Kind string
	Spec struct {
		Version   string
		Platforms []struct {
			Selector struct{ MatchLabels map[string]string }
			URI      string
			SHA256   string
			Bin      string
			Files    []struct{ From, To string }
		}
	}
}

// unpack returns the files of a plugin archive.
func unpack(t *testing.T, name string) map[string][]byte {
	t.Helper()
	data := read(t, name)
	files := map[string][]byte{}
	if strings.HasSuffix(name, ".zip") {
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range zr.File {
			rc, err := f.Open()
			if err != nil {
				t.Fatal(err)
			}
			files[f.Name], _ = io.ReadAll(rc)
			_ = rc.Close()
		}
		return files
	}
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Mode&0o111 == 0 && !strings.HasPrefix(h.Name, "LICENSE") {
			t.Errorf("%s: %s is not executable", name, h.Name)
		}
		files[h.Name], _ = io.ReadAll(tr)
	}
}

func TestKrewManifestMatchesArchives(t *testing.T) {
	var m krewManifest
	if err := yaml.Unmarshal(read(t, "keyward.yaml"), &m); err != nil {
		t.Fatal(err)
	}
	if m.Kind != "Plugin" || m.Spec.Version != version {
		t.Errorf("keyward.yaml: kind %s, version %s", m.Kind, m.Spec.Version)
	}
	listed := sums(t)
	var seen []string
	for _, p := range m.Spec.Platforms {
		platform := p.Selector.MatchLabels["os"] + "/" + p.Selector.MatchLabels["arch"]
		seen = append(seen, platform)
		name := p.URI[strings.LastIndex(p.URI, "/")+1:]
		if got := sha(read(t, name)); got != p.SHA256 || listed[name] != p.SHA256 {
			t.Errorf("%s: krew sha256 %s, the archive's %s, SHA256SUMS %s", platform, p.SHA256, got, listed[name])
		}
		if !strings.Contains(p.URI, version) {
			t.Errorf("%s: uri %s does not name the version", platform, p.URI)
		}
		files := unpack(t, name)
		bin, ok := files[p.Bin]
		if !ok || files["LICENSE"] == nil {
			t.Errorf("%s: archive holds %v, want %s and LICENSE", platform, keys(files), p.Bin)
			continue
		}
		for _, f := range p.Files {
			if _, ok := files[f.From]; !ok {
				t.Errorf("%s: krew copies %s, which the archive lacks", platform, f.From)
			}
		}
		// The binary was built for the platform, statically, with the version stamped.
		tmp := filepath.Join(t.TempDir(), p.Bin)
		if err := os.WriteFile(tmp, bin, 0o755); err != nil {
			t.Fatal(err)
		}
		info, err := buildinfo.ReadFile(tmp)
		if err != nil {
			t.Fatalf("%s: %v", platform, err)
		}
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		if settings["GOOS"]+"/"+settings["GOARCH"] != platform || settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
			t.Errorf("%s: built with %v", platform, settings)
		}
		// -trimpath keeps -ldflags out of the build info; the stamped
		// internal/version.Version string is in the binary's data once the
		// plugin links that package (its `version` command).
		switch {
		case !bytes.Contains(bin, []byte("keyward.dev/keyward/internal/version.")):
			t.Logf("%s: the plugin does not link internal/version, so it cannot report %s", platform, version)
		case !bytes.Contains(bin, []byte(version)):
			t.Errorf("%s: the binary links internal/version but does not hold its version %s", platform, version)
		}
	}
	slices.Sort(seen)
	want := slices.Clone(platforms)
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Errorf("krew platforms %v, want %v", seen, want)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The image archive is an OCI layout whose image is labelled with the
// version, named with the versioned reference, and, when the image tool
// still has it, is that very image (same config digest, the image ID).
func TestImageArchive(t *testing.T) {
	matches, _ := filepath.Glob(filepath.Join(dir, "keyward-manager_"+version+"_linux_*.oci.tar"))
	if len(matches) != 1 {
		t.Fatalf("image archives %v, want one", matches)
	}
	f, err := os.Open(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	blobs := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "index.json" || strings.HasPrefix(h.Name, "blobs/sha256/") {
			blobs[h.Name], _ = io.ReadAll(tr)
		}
	}
	type descriptor struct {
		Digest      string
		Annotations map[string]string
	}
	var index struct{ Manifests []descriptor }
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, blobs["index.json"])
	}
	if ref := index.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; ref != image+":"+version && ref != version {
		t.Errorf("the archive's image is named %q, want %s", ref, image+":"+version)
	}
	blob := func(digest string) []byte { return blobs["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")] }
	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &manifest); err != nil {
		t.Fatal(err)
	}
	var config struct {
		Config struct {
			User   string
			Labels map[string]string
		}
	}
	if err := json.Unmarshal(blob(manifest.Config.Digest), &config); err != nil {
		t.Fatal(err)
	}
	if l := config.Config.Labels; l["org.opencontainers.image.version"] != version || l["org.opencontainers.image.licenses"] != "Apache-2.0" {
		t.Errorf("image labels %v", l)
	}
	// The manager in the image reports the version (--version, keyward_build_info).
	var manager []byte
	for _, layer := range manifest.Layers {
		gz, err := gzip.NewReader(bytes.NewReader(blob(layer.Digest)))
		if err != nil {
			t.Fatal(err)
		}
		lt := tar.NewReader(gz)
		for {
			h, err := lt.Next()
			if err != nil {
				break
			}
			if h.Name == "manager" || h.Name == "/manager" {
				manager, _ = io.ReadAll(lt)
			}
		}
	}
	if !bytes.Contains(manager, []byte(version)) {
		t.Errorf("the image's /manager (%d bytes) does not hold its version %s", len(manager), version)
	}
	if podman, err := exec.LookPath("podman"); err == nil {
		out, err := exec.Command(podman, "image", "inspect", "--format", "{{.Id}}", image+":"+version).Output()
		if err != nil {
			t.Logf("podman no longer has %s; not comparing image IDs", image+":"+version)
		} else if id := strings.TrimSpace(string(out)); "sha256:"+id != manifest.Config.Digest {
			t.Errorf("the archive's image %s is not the image built, %s", manifest.Config.Digest, id)
		}
	}
}

// The SBOMs are CycloneDX documents naming the release and the modules
// linked into each binary.
func TestSBOMs(t *testing.T) {
	for file, module := range map[string]string{"keyward-manager.cdx.json": "sigs.k8s.io/controller-runtime", "kubectl-keyward.cdx.json": "github.com/spf13/cobra"} {
		var bom struct {
			BOMFormat   string
			SpecVersion string
			Metadata    struct {
				Component struct{ Name, Version string }
			}
			Components []struct{ Name, Version, Purl string }
		}
		if err := json.Unmarshal(read(t, file), &bom); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if bom.BOMFormat != "CycloneDX" || bom.Metadata.Component.Version != version {
			t.Errorf("%s: format %s, component %+v", file, bom.BOMFormat, bom.Metadata.Component)
		}
		if !slices.ContainsFunc(bom.Components, func(c struct{ Name, Version, Purl string }) bool {
			return c.Name == module && strings.HasPrefix(c.Purl, "pkg:golang/"+module+"@")
		}) {
			t.Errorf("%s does not list %s (%d components)", file, module, len(bom.Components))
		}
	}
}
