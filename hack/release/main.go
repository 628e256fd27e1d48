// Command release writes the parts of a release that are Go's to make
// (`make release`, docs/operations.md#releases), into -out next to the
// install.yaml and image archive the Makefile wrote there:
//
//   - the chart, packaged with the Helm SDK: keyward-<X.Y.Z>.tgz, version and
//     appVersion set, its default image the release's;
//   - kubectl-keyward for each platform (CGO_ENABLED=0 cross builds, version
//     stamped), archived as krew installs them: .tar.gz, .zip on Windows,
//     each with the binary and LICENSE;
//   - CycloneDX SBOMs of the manager and the plugin, from the modules each
//     binary records (debug/buildinfo);
//   - keyward.yaml, the krew plugin manifest, with each archive's sha256;
//   - SHA256SUMS of every file in -out.
//
// Archives and files carry the commit's time (-epoch), so the same commit
// gives the same archives.
package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
	"sigs.k8s.io/yaml"

	"keyward.dev/keyward/internal/version"
)

// semver is a release version as tags name it: v1.2.3, v1.2.3-rc.1.
var semver = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

type release struct {
	version   string    // v1.2.3
	revision  string    // the commit
	image     string    // registry/repository, without a tag
	out       string    // the release directory
	chartDir  string    // charts/keyward
	urlBase   string    // where the plugin archives are downloaded from
	platforms []string  // os/arch
	manager   string    // the manager binary in the image, for its SBOM
	epoch     time.Time // every archive entry's time
}

func main() {
	var r release
	var platforms string
	var epoch int64
	flag.StringVar(&r.version, "version", "", "the release's version, a tag such as v1.2.3 (required)")
	flag.StringVar(&r.revision, "revision", "unknown", "the source commit")
	flag.StringVar(&r.image, "image", "ghcr.io/keyward/manager", "the manager image's name, without a tag")
	flag.StringVar(&r.out, "out", "dist", "the release directory")
	flag.StringVar(&r.chartDir, "chart", "charts/keyward", "the chart")
	flag.StringVar(&r.urlBase, "url", "https://github.com/keyward/keyward/releases/download/{{version}}", "where the plugin archives are published ({{version}} is replaced)")
	flag.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64,darwin/amd64,darwin/arm64,windows/amd64", "the plugin's platforms, os/arch, comma-separated")
	flag.StringVar(&r.manager, "manager", "bin/image/context/manager", "the manager binary the image holds (for its SBOM)")
	flag.Int64Var(&epoch, "epoch", 0, "archive entries' time, seconds since 1970 (SOURCE_DATE_EPOCH)")
	flag.Parse()
	r.platforms = strings.Split(platforms, ",")
	r.epoch = time.Unix(epoch, 0).UTC()
	r.urlBase = strings.ReplaceAll(r.urlBase, "{{version}}", r.version)
	if err := r.run(); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func (r *release) run() error {
	if !semver.MatchString(r.version) {
		return fmt.Errorf("version %q is not a tag such as v1.2.3", r.version)
	}
	if err := os.MkdirAll(r.out, 0o755); err != nil {
		return err
	}
	chart, err := r.packageChart()
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	fmt.Println("wrote", chart)
	archives, err := r.buildPlugin()
	if err != nil {
		return fmt.Errorf("plugin: %w", err)
	}
	if err := r.krewManifest(archives); err != nil {
		return fmt.Errorf("krew manifest: %w", err)
	}
	if err := r.checksums(); err != nil {
		return fmt.Errorf("SHA256SUMS: %w", err)
	}
	return nil
}

// packageChart packages the chart with the release's version, appVersion
// and image (registry and repository in values.yaml, comments kept; the tag
// left empty so that appVersion is the tag).
func (r *release) packageChart() (string, error) {
	chrt, err := loader.Load(r.chartDir)
	if err != nil {
		return "", err
	}
	chrt.Metadata.Version = strings.TrimPrefix(r.version, "v")
	chrt.Metadata.AppVersion = r.version
	registry, repository := splitRegistry(r.image)
	found := false
	for _, f := range chrt.Raw {
		if f.Name != chartutil.ValuesfileName {
			continue
		}
		node, err := kyaml.Parse(string(f.Data))
		if err != nil {
			return "", err
		}
		for field, value := range map[string]string{"registry": registry, "repository": repository, "tag": ""} {
			if err := node.PipeE(kyaml.Lookup("image"), kyaml.SetField(field, kyaml.NewStringRNode(value))); err != nil {
				return "", fmt.Errorf("values.yaml image.%s: %w", field, err)
			}
		}
		s, err := node.String()
		if err != nil {
			return "", err
		}
		f.Data = []byte(s)
		if err := yaml.Unmarshal(f.Data, &chrt.Values); err != nil {
			return "", err
		}
		found = true
	}
	if !found {
		return "", errors.New("no values.yaml")
	}
	if err := chrt.Validate(); err != nil {
		return "", err
	}
	return chartutil.Save(chrt, r.out)
}

// splitRegistry splits an image name into its registry host (the first
// component when it looks like a host: a dot, a port or localhost) and the
// rest.
func splitRegistry(image string) (registry, repository string) {
	first, rest, ok := strings.Cut(image, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first, rest
	}
	return "", image
}

// buildPlugin cross-builds kubectl-keyward and archives each build as krew
// installs it; it returns the archives by platform.
func (r *release) buildPlugin() (map[string]string, error) {
	license, err := os.ReadFile("LICENSE")
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("bin", "release-plugin-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	archives := map[string]string{}
	sbomDone := false
	for _, p := range r.platforms {
		goos, goarch, ok := strings.Cut(p, "/")
		if !ok {
			return nil, fmt.Errorf("platform %q is not os/arch", p)
		}
		bin := "kubectl-keyward"
		if goos == "windows" {
			bin += ".exe"
		}
		built := filepath.Join(tmp, goos+"-"+goarch, bin)
		start := time.Now()
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", version.LDFlags(r.version, r.revision), "-o", built, "./cmd/kubectl-keyward")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("go build for %s: %w", p, err)
		}
		data, err := os.ReadFile(built)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("kubectl-keyward_%s_%s_%s", r.version, goos, goarch)
		var archive []byte
		if goos == "windows" {
			name += ".zip"
			archive, err = zipOf(r.epoch, file{bin, data, 0o755}, file{"LICENSE", license, 0o644})
		} else {
			name += ".tar.gz"
			archive, err = tarGzOf(r.epoch, file{bin, data, 0o755}, file{"LICENSE", license, 0o644})
		}
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(r.out, name), archive, 0o644); err != nil {
			return nil, err
		}
		archives[p] = name
		fmt.Printf("wrote %s (%s in %s)\n", filepath.Join(r.out, name), p, time.Since(start).Round(time.Second))
		if !sbomDone {
			if err := r.sbom(built, "kubectl-keyward.cdx.json"); err != nil {
				return nil, err
			}
			sbomDone = true
		}
	}
	if r.manager != "" {
		if err := r.sbom(r.manager, "keyward-manager.cdx.json"); err != nil {
			return nil, err
		}
	}
	return archives, nil
}

type file struct {
	name string
	data []byte
	mode int64
}

func tarGzOf(mtime time.Time, files ...file) ([]byte, error) {
	var b bytes.Buffer
	gz, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	gz.ModTime = mtime
	tw := tar.NewWriter(gz)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: mtime,
			Typeflag: tar.TypeReg, Format: tar.FormatPAX, Uname: "root", Gname: "root"}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func zipOf(mtime time.Time, files ...file) ([]byte, error) {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, f := range files {
		h := &zip.FileHeader{Name: f.name, Method: zip.Deflate, Modified: mtime}
		h.SetMode(os.FileMode(f.mode))
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// sbom writes a CycloneDX SBOM of a Go binary: its main module and every
// module linked into it, with the versions and go.sum hashes the binary
// records.
func (r *release) sbom(binary, name string) error {
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return fmt.Errorf("%s: %w", binary, err)
	}
	purl := func(path, v string) string { return "pkg:golang/" + path + "@" + v }
	component := func(m *debug.Module) cdx.Component {
		c := cdx.Component{BOMRef: purl(m.Path, m.Version), Type: cdx.ComponentTypeLibrary, Name: m.Path, Version: m.Version, PackageURL: purl(m.Path, m.Version)}
		if h, ok := strings.CutPrefix(m.Sum, "h1:"); ok {
			c.Properties = &[]cdx.Property{{Name: "go:sum", Value: "h1:" + h}}
		}
		return c
	}
	app := cdx.Component{BOMRef: purl(info.Main.Path, r.version), Type: cdx.ComponentTypeApplication, Name: filepath.Base(strings.TrimSuffix(name, ".cdx.json")),
		Version: r.version, PackageURL: purl(info.Main.Path, r.version),
		Licenses:   &cdx.Licenses{{License: &cdx.License{ID: "Apache-2.0"}}},
		Properties: &[]cdx.Property{{Name: "go:version", Value: info.GoVersion}, {Name: "vcs:revision", Value: r.revision}}}
	var deps []cdx.Component
	var refs []string
	for _, d := range info.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		c := component(m)
		deps = append(deps, c)
		refs = append(refs, c.BOMRef)
	}
	bom := cdx.NewBOM()
	bom.SerialNumber = "" // reproducible: no random serial
	bom.Metadata = &cdx.Metadata{Timestamp: r.epoch.Format(time.RFC3339), Component: &app,
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{{Type: cdx.ComponentTypeApplication, Name: "keyward hack/release (debug/buildinfo, github.com/CycloneDX/cyclonedx-go)"}}}}
	bom.Components = &deps
	bom.Dependencies = &[]cdx.Dependency{{Ref: app.BOMRef, Dependencies: &refs}}
	var b bytes.Buffer
	enc := cdx.NewBOMEncoder(&b, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	if err := enc.Encode(bom); err != nil {
		return err
	}
	fmt.Printf("wrote %s (%d modules)\n", filepath.Join(r.out, name), len(deps))
	return os.WriteFile(filepath.Join(r.out, name), b.Bytes(), 0o644)
}

// krewManifest writes keyward.yaml, the plugin's krew manifest.
func (r *release) krewManifest(archives map[string]string) error {
	type selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	}
	type fileOp struct {
		From string `json:"from"`
		To   string `json:"to"`
	}
	type platform struct {
		Selector selector `json:"selector"`
		URI      string   `json:"uri"`
		SHA256   string   `json:"sha256"`
		Bin      string   `json:"bin"`
		Files    []fileOp `json:"files"`
	}
	var platforms []platform
	keys := make([]string, 0, len(archives))
	for p := range archives {
		keys = append(keys, p)
	}
	slices.Sort(keys)
	for _, p := range keys {
		goos, goarch, _ := strings.Cut(p, "/")
		data, err := os.ReadFile(filepath.Join(r.out, archives[p]))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		bin := "kubectl-keyward"
		if goos == "windows" {
			bin += ".exe"
		}
		platforms = append(platforms, platform{
			Selector: selector{MatchLabels: map[string]string{"os": goos, "arch": goarch}},
			URI:      r.urlBase + "/" + archives[p], SHA256: hex.EncodeToString(sum[:]), Bin: bin,
			Files: []fileOp{{From: bin, To: "."}, {From: "LICENSE", To: "."}},
		})
	}
	manifest := map[string]any{
		"apiVersion": "krew.googlecontainertools.github.com/v1alpha2",
		"kind":       "Plugin",
		"metadata":   map[string]any{"name": "keyward"},
		"spec": map[string]any{
			"version":          r.version,
			"homepage":         "https://keyward.dev",
			"shortDescription": "Manage Keyward API access keys",
			"description": "Lists, rotates, revokes, extends and reveals Keyward AccessKeys, finds the key\n" +
				"behind a key ID, and lists keys about to expire (docs/kubectl-plugin.md).\n",
			"platforms": platforms,
		},
	}
	data, err := yaml.Marshal(manifest)
	if err != nil {
		return err
	}
	header := fmt.Sprintf("# krew plugin manifest of kubectl-keyward %s, written by `make release`.\n", r.version)
	fmt.Println("wrote", filepath.Join(r.out, "keyward.yaml"))
	return os.WriteFile(filepath.Join(r.out, "keyward.yaml"), append([]byte(header), data...), 0o644)
}

// checksums writes SHA256SUMS (sha256sum's format) of every file in the
// release directory.
func (r *release) checksums() error {
	entries, err := os.ReadDir(r.out)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name() == "SHA256SUMS" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(r.out, e.Name()))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(sum[:]), e.Name())
	}
	fmt.Println("wrote", filepath.Join(r.out, "SHA256SUMS"))
	return os.WriteFile(filepath.Join(r.out, "SHA256SUMS"), []byte(b.String()), 0o644)
}
