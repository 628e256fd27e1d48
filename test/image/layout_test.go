//go:build image

package image

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// requiredLabels are the OCI annotations issue 13 asks for.
var requiredLabels = []string{
	"org.opencontainers.image.source",
	"org.opencontainers.image.version",
	"org.opencontainers.image.revision",
	"org.opencontainers.image.licenses",
	"org.opencontainers.image.title",
}

// finalStage returns the instructions of the last stage of a Dockerfile, with
// continuation lines joined and comments dropped, keyed by instruction.
func finalStage(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	cur := ""
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || (line == "" && cur == "") {
			continue
		}
		if rest, ok := strings.CutSuffix(line, `\`); ok {
			cur += rest + " "
			continue
		}
		lines = append(lines, strings.TrimSpace(cur+line))
		cur = ""
	}
	stage := map[string][]string{}
	for _, l := range lines {
		instr, args, _ := strings.Cut(l, " ")
		instr = strings.ToUpper(instr)
		if instr == "FROM" {
			stage = map[string][]string{}
		}
		stage[instr] = append(stage[instr], strings.Join(strings.Fields(args), " "))
	}
	return stage
}

var labelRE = regexp.MustCompile(`(org\.opencontainers\.image\.[a-z]+)="([^"]*)"`)

func labels(stage map[string][]string) map[string]string {
	out := map[string]string{}
	for _, l := range stage["LABEL"] {
		for _, m := range labelRE.FindAllStringSubmatch(l, -1) {
			out[m[1]] = m[2]
		}
	}
	return out
}

// The Dockerfile (CI with a registry) and hack/image/Containerfile (make
// image) must produce the same layout: entrypoint, user, the binary's path,
// the labels and their values, and the version stamping.
func TestDockerfileAndContainerfileAgree(t *testing.T) {
	docker := finalStage(t, repoFile("Dockerfile"))
	podman := finalStage(t, repoFile("hack", "image", "Containerfile"))
	for _, instr := range []string{"ENTRYPOINT", "USER"} {
		if !slices.Equal(docker[instr], podman[instr]) {
			t.Errorf("%s differs: Dockerfile %q, Containerfile %q", instr, docker[instr], podman[instr])
		}
	}
	if want := []string{`["/manager"]`}; !slices.Equal(podman["ENTRYPOINT"], want) {
		t.Errorf("ENTRYPOINT %q, want %q", podman["ENTRYPOINT"], want)
	}
	if want := []string{"65532:65532"}; !slices.Equal(podman["USER"], want) {
		t.Errorf("USER %q, want %q", podman["USER"], want)
	}
	dl, pl := labels(docker), labels(podman)
	for _, k := range requiredLabels {
		if pl[k] == "" || dl[k] != pl[k] {
			t.Errorf("label %s: Dockerfile %q, Containerfile %q (both must set it, alike)", k, dl[k], pl[k])
		}
	}
	if len(dl) != len(pl) {
		t.Errorf("label sets differ: Dockerfile %v, Containerfile %v", dl, pl)
	}
	manager := func(stage map[string][]string) bool {
		return slices.ContainsFunc(stage["COPY"], func(c string) bool { return strings.HasSuffix(c, " /manager") })
	}
	if !manager(docker) || !manager(podman) {
		t.Errorf("both must copy the binary to /manager: Dockerfile COPY %q, Containerfile COPY %q", docker["COPY"], podman["COPY"])
	}
	whole, err := os.ReadFile(repoFile("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X keyward.dev/keyward/internal/version.Version=${VERSION}", "-X keyward.dev/keyward/internal/version.Revision=${REVISION}", "COPY *.go ./"} {
		if !strings.Contains(string(whole), want) {
			t.Errorf("Dockerfile does not contain %q (hack/image/build.sh builds that way)", want)
		}
	}
}

type imageInspect struct {
	Size   int64
	Config struct {
		User       string
		Entrypoint []string
		Cmd        []string
		Labels     map[string]string
	}
	RootFS struct{ Layers []string }
}

// The image's configuration as podman sees it: user, entrypoint, labels,
// size.
func TestImageConfiguration(t *testing.T) {
	var got []imageInspect
	if err := json.Unmarshal([]byte(mustPodman(t, "image", "inspect", imageRef)), &got); err != nil || len(got) != 1 {
		t.Fatalf("podman image inspect %s: %v (%d images)", imageRef, err, len(got))
	}
	img := got[0]
	measured(t, "image size: %d bytes (%.1f MB, bound %d MB), %d layer(s)", img.Size, float64(img.Size)/1e6, maxImageSize>>20, len(img.RootFS.Layers))
	if img.Size <= 0 || img.Size >= maxImageSize {
		t.Errorf("image size %d bytes, want under %d", img.Size, maxImageSize)
	}
	if img.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", img.Config.User)
	}
	if !slices.Equal(img.Config.Entrypoint, []string{"/manager"}) || len(img.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want [/manager] and no cmd", img.Config.Entrypoint, img.Config.Cmd)
	}
	for _, k := range requiredLabels {
		if img.Config.Labels[k] == "" {
			t.Errorf("label %s missing", k)
		}
	}
	if v := img.Config.Labels["org.opencontainers.image.version"]; v != wantVersion {
		t.Errorf("version label %q, want %q", v, wantVersion)
	}
	if v := img.Config.Labels["org.opencontainers.image.revision"]; v != wantRevision {
		t.Errorf("revision label %q, want %q", v, wantRevision)
	}
	t.Logf("user %s, entrypoint %q, labels %v", img.Config.User, img.Config.Entrypoint, img.Config.Labels)
}

// Every file in the image, read from the OCI archive `make image-save`
// writes (hack/image/save.sh): the manager, /etc/passwd and /etc/group, nothing else —
// so no shell and no package manager. And a shell cannot be started.
func TestImageContents(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "image.tar")
	save := exec.Command(repoFile("hack", "image", "save.sh"))
	save.Env = append(os.Environ(), "IMG="+imageRef, "IMAGE_ARCHIVE="+archive)
	if out, err := save.CombinedOutput(); err != nil {
		t.Fatalf("hack/image/save.sh (make image-save): %v\n%s", err, out)
	}
	if st, err := os.Stat(archive); err == nil {
		measured(t, "OCI archive (make image-save): %d bytes (%.1f MB compressed)", st.Size(), float64(st.Size())/1e6)
	}
	files, err := ociFiles(archive)
	if err != nil {
		t.Fatalf("reading %s: %v", archive, err)
	}
	var names []string
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	t.Logf("files in the image: %v", names)
	if want := []string{"etc/group", "etc/passwd", "manager"}; !slices.Equal(names, want) {
		t.Errorf("files %v, want exactly %v", names, want)
	}
	if m, ok := files["manager"]; ok {
		if m.Uid != 0 || m.Mode&0o022 != 0 || m.Mode&0o111 == 0 {
			t.Errorf("/manager uid %d mode %o: want root-owned, executable, not writable by others", m.Uid, m.Mode)
		}
	}

	out, errOut, err := podman("run", "--rm", "--label", "keyward.dev/image-test="+runID, "--network=none",
		"--entrypoint", "/bin/sh", imageRef, "-c", "true")
	if err == nil {
		t.Errorf("podman run --entrypoint /bin/sh succeeded: the image has a shell\n%s", out)
	} else {
		t.Logf("podman run --entrypoint /bin/sh fails as it should: %v: %s", err, strings.TrimSpace(errOut))
	}
}

// ociFiles lists the regular files, symlinks and hard links of every layer of
// the single image in an OCI archive, by path without the leading slash.
func ociFiles(archive string) (map[string]*tar.Header, error) {
	blobs := map[string][]byte{}
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	tr := tar.NewReader(f)
	var index []byte
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		switch name := strings.TrimPrefix(h.Name, "./"); {
		case name == "index.json":
			index = data
		case strings.HasPrefix(name, "blobs/sha256/"):
			blobs["sha256:"+strings.TrimPrefix(name, "blobs/sha256/")] = data
		}
	}
	type descriptor struct {
		MediaType string
		Digest    string
	}
	var idx struct{ Manifests []descriptor }
	if err := json.Unmarshal(index, &idx); err != nil || len(idx.Manifests) != 1 {
		return nil, errors.New("index.json: want exactly one manifest")
	}
	var manifest struct{ Layers []descriptor }
	if err := json.Unmarshal(blobs[idx.Manifests[0].Digest], &manifest); err != nil {
		return nil, err
	}
	files := map[string]*tar.Header{}
	for _, l := range manifest.Layers {
		var r io.Reader = strings.NewReader(string(blobs[l.Digest]))
		if strings.HasSuffix(l.MediaType, "+gzip") {
			if r, err = gzip.NewReader(r); err != nil {
				return nil, err
			}
		}
		lt := tar.NewReader(r)
		for {
			h, err := lt.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, err
			}
			if h.Typeflag != tar.TypeDir {
				files[strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")] = h
			}
		}
	}
	return files, nil
}
