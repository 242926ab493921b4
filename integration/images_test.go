package integration

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/berth-dev/berth/integration/fixture"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// imageDaemon starts a registry with a counting proxy in front, and a
// berthd whose docker.io mirror is the proxy.
func imageDaemon(t *testing.T, extraTOML string, opts ...fixture.RegistryOption) (*daemon, *fixture.Registry, *registryProxy) {
	t.Helper()
	reg := fixture.StartRegistry(t, opts...)
	proxy := startProxy(t, reg.Addr)
	d := startDaemon(t, withConfig(mirrorConfig(proxy.Addr)+extraTOML))
	return d, reg, proxy
}

func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d.String())
	}
	return out
}

func configDigest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// inspect returns `berthctl image inspect` of one image as a map.
func (d *daemon) inspect(name string) map[string]any {
	d.t.Helper()
	var list []map[string]any
	if err := json.Unmarshal([]byte(d.mustCtl("image", "inspect", name)), &list); err != nil || len(list) != 1 {
		d.t.Fatalf("inspect %s: %v %v", name, list, err)
	}
	return list[0]
}

// dirEntries lists what is left in a directory (none if it is missing).
func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// assertNoImageData checks that no blob, ingest or snapshot is left.
func (d *daemon) assertNoImageData() {
	d.t.Helper()
	if b := dirEntries(d.t, filepath.Join(d.root, "content", "blobs", "sha256")); len(b) > 0 {
		d.t.Errorf("blobs left: %v", b)
	}
	if in := dirEntries(d.t, filepath.Join(d.root, "content", "ingest")); len(in) > 0 {
		d.t.Errorf("ingests left: %v", in)
	}
	for _, drv := range []string{"overlay", "native"} {
		if s := dirEntries(d.t, filepath.Join(d.root, "snapshots", drv, "snapshots")); len(s) > 0 {
			d.t.Errorf("%s snapshots left: %v", drv, s)
		}
	}
}

func TestImagePullInspectRemove(t *testing.T) {
	d, reg, proxy := imageDaemon(t, "")
	img := fixture.Busybox(t)
	digest := reg.Push(t, reg.Ref("library/busybox:latest"), img)
	cfg := configDigest(t, img)
	layer := layerDigests(t, img)[0]

	out := d.mustCtl("pull", "busybox")
	for _, want := range []string{
		"latest: Pulling from library/busybox",
		layer[7:19] + ": Pull complete",
		"Digest: " + digest,
		"Status: Downloaded newer image for busybox:latest",
		"docker.io/library/busybox:latest",
	} {
		if !hasLine(out, want) {
			t.Errorf("pull output lacks %q:\n%s", want, out)
		}
	}
	if proxy.gets(layer) != 1 {
		t.Errorf("layer fetched %d times, want 1", proxy.gets(layer))
	}
	out = d.mustCtl("pull", "busybox:latest")
	if !hasLine(out, "Status: Image is up to date for busybox:latest") || !hasLine(out, layer[7:19]+": Already exists") {
		t.Errorf("second pull:\n%s", out)
	}
	if proxy.gets(layer) != 1 {
		t.Errorf("second pull downloaded the layer again")
	}

	out = d.mustCtl("images")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "REPOSITORY TAG IMAGE ID CREATED SIZE" {
		t.Fatalf("images:\n%s", out)
	}
	if f := strings.Fields(lines[1]); f[0] != "busybox" || f[1] != "latest" || f[2] != cfg[7:19] {
		t.Errorf("images row %q, want busybox latest %s", lines[1], cfg[7:19])
	}
	if q := strings.TrimSpace(d.mustCtl("images", "-q")); q != cfg[7:19] {
		t.Errorf("images -q = %q", q)
	}
	if out := d.mustCtl("images", "--digests"); !strings.Contains(out, digest) {
		t.Errorf("images --digests lacks %s:\n%s", digest, out)
	}
	if out := strings.TrimSpace(d.mustCtl("images", "--format", "{{.name}}")); out != "docker.io/library/busybox:latest" {
		t.Errorf("images --format: %q", out)
	}
	if out := d.mustCtl("images", "busybox"); len(strings.Split(strings.TrimSpace(out), "\n")) != 2 {
		t.Errorf("images busybox:\n%s", out)
	}
	if out := d.mustCtl("images", "--filter", "reference=alpine"); len(strings.Split(strings.TrimSpace(out), "\n")) != 1 {
		t.Errorf("images --filter reference=alpine:\n%s", out)
	}

	in := d.inspect("busybox")
	if in["chainId"] == "" || in["chainId"] == nil {
		t.Errorf("inspect has no chainId: %v", in)
	}
	if c, _ := in["config"].(map[string]any); fmt.Sprint(c["cmd"]) != "[sh]" {
		t.Errorf("inspect config: %v", in["config"])
	}
	// The image's ID (config digest) finds it too.
	if got := d.inspect(cfg[7:19]); got["name"] != "docker.io/library/busybox:latest" {
		t.Errorf("inspect by ID: %v", got["name"])
	}

	d.mustCtl("tag", "busybox", "mine:v1")
	out = d.mustCtl("rmi", "busybox")
	if !hasLine(out, "Untagged: busybox:latest") || strings.Contains(out, "Deleted:") {
		t.Errorf("rmi of one of two names:\n%s", out)
	}
	out = d.mustCtl("rmi", "mine:v1")
	if !hasLine(out, "Untagged: mine:v1") || !hasLine(out, "Deleted: "+cfg) {
		t.Errorf("rmi of the last name:\n%s", out)
	}
	if out := d.mustCtl("images", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("images after rmi: %q", out)
	}
	d.assertNoImageData()
	if r := d.ctl("rmi", "busybox"); r.Code != 1 || !strings.Contains(r.Stderr, "No such image") && !strings.Contains(r.Stderr, "no such image") {
		t.Errorf("rmi of a missing image: %d %s", r.Code, r.Stderr)
	}
}

// genLayer makes a small layer with a few distinct files.
func genLayer(t *testing.T, tag string) v1.Layer {
	return fixture.Layer(t, fixture.LayerTar(t, []fixture.Entry{
		{Name: tag + "/", Type: tar.TypeDir},
		{Name: tag + "/file", Body: []byte(strings.Repeat(tag, 1000))},
	}))
}

func TestImagePullSharedLayersDownloadsOnlyNewOnes(t *testing.T) {
	d, reg, proxy := imageDaemon(t, "")
	var ls []v1.Layer
	for i := range 5 {
		ls = append(ls, genLayer(t, fmt.Sprintf("layer%d", i)))
	}
	small := fixture.Image(t, fixture.Config{Cmd: []string{"sh"}}, ls[:2]...)
	big := fixture.Image(t, fixture.Config{Cmd: []string{"sh"}, OCI: true}, ls...)
	reg.Push(t, reg.Ref("library/small:latest"), small)
	reg.Push(t, reg.Ref("library/big:latest"), big)
	d.mustCtl("pull", "small")
	proxy.reset()
	out := d.mustCtl("pull", "big")
	digests := layerDigests(t, big)
	for i, dg := range digests {
		want := 1
		if i < 2 {
			want = 0
		}
		if got := proxy.gets(dg); got != want {
			t.Errorf("layer %d (%s): %d GETs, want %d", i, dg, got, want)
		}
	}
	for _, dg := range digests[:2] {
		if !hasLine(out, dg[7:19]+": Already exists") {
			t.Errorf("pull output does not say %s already exists:\n%s", dg[7:19], out)
		}
	}
	df := d.mustCtl("system", "df")
	if !strings.Contains(df, "TYPE") || !regexp.MustCompile(`(?m)^Images\s+2\s+0\s`).MatchString(df) ||
		!regexp.MustCompile(`(?m)^Snapshots\s+5\s`).MatchString(df) {
		t.Errorf("system df:\n%s", df)
	}
	out = d.mustCtl("image", "prune", "--all")
	if !strings.Contains(out, "untagged: big:latest") || !strings.Contains(out, "Total reclaimed space: ") {
		t.Errorf("image prune --all:\n%s", out)
	}
	d.assertNoImageData()
}

func TestImageConcurrentPullsShareDownloads(t *testing.T) {
	d, reg, proxy := imageDaemon(t, "")
	var ls []v1.Layer
	for i := range 3 {
		ls = append(ls, fixture.Layer(t, fixture.LayerTar(t, []fixture.Entry{
			{Name: fmt.Sprintf("big%d", i), Body: randomBytes(t, 2<<20)},
		})))
	}
	img := fixture.Image(t, fixture.Config{Cmd: []string{"sh"}}, ls...)
	reg.Push(t, reg.Ref("library/ten:latest"), img)
	// Slow enough that the ten pulls overlap.
	proxy.setThrottle(8 << 20)
	var wg sync.WaitGroup
	results := make([]result, 10)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = d.ctl("pull", "ten")
		}(i)
	}
	wg.Wait()
	for i, r := range results {
		if r.Code != 0 {
			t.Errorf("pull %d: exit %d: %s", i, r.Code, r.Stderr)
		}
	}
	for _, dg := range append(layerDigests(t, img), configDigest(t, img)) {
		if got := proxy.gets(dg); got != 1 {
			t.Errorf("blob %s downloaded %d times, want once", dg, got)
		}
	}
	if n := len(strings.Fields(d.mustCtl("images", "-q"))); n != 1 {
		t.Errorf("%d images after ten pulls of one", n)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	f, err := os.Open("/dev/urandom")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestImagePullTamperedBlobLeavesNothing(t *testing.T) {
	d, reg, proxy := imageDaemon(t, "")
	img := fixture.Image(t, fixture.Config{Cmd: []string{"sh"}}, genLayer(t, "one"), genLayer(t, "two"))
	reg.Push(t, reg.Ref("library/tampered:latest"), img)
	bad := layerDigests(t, img)[1]
	proxy.setTamper(bad)
	r := d.ctl("pull", "tampered")
	if r.Code == 0 || !strings.Contains(r.Stderr, bad) {
		t.Fatalf("pull of a tampered blob: exit %d, stderr %q; want a failure naming %s", r.Code, r.Stderr, bad)
	}
	if out := d.mustCtl("images", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("an image was recorded: %q", out)
	}
	d.assertNoImageData()
	// The registry fixed, the pull works.
	proxy.setTamper("")
	d.mustCtl("pull", "tampered")
}

// TestImagePullRetryAfterRegistryFailure: a pull that fails because the
// registry does (not because content is bad) keeps what it fetched, so
// the retry downloads only the rest.
func TestImagePullRetryAfterRegistryFailure(t *testing.T) {
	d, reg, proxy := imageDaemon(t, "")
	img := fixture.Image(t, fixture.Config{Cmd: []string{"sh"}}, genLayer(t, "r1"), genLayer(t, "r2"), genLayer(t, "r3"))
	reg.Push(t, reg.Ref("library/flaky:latest"), img)
	ls := layerDigests(t, img)
	proxy.setFail(ls[2])
	if r := d.ctl("pull", "flaky"); r.Code == 0 || !strings.Contains(r.Stderr, ls[2]) || !strings.Contains(r.Stderr, "503") {
		t.Fatalf("pull with a failing registry: exit %d %q", r.Code, r.Stderr)
	}
	proxy.setFail("")
	out := d.mustCtl("pull", "flaky")
	for _, l := range ls {
		if got := proxy.gets(l); got != 1 && l != ls[2] || l == ls[2] && got != 2 {
			t.Errorf("layer %s: %d GETs over both pulls", l[7:19], got)
		}
	}
	if !hasLine(out, "Status: Downloaded newer image for flaky:latest") {
		t.Errorf("retry:\n%s", out)
	}
}

// TestImagePullResumesAfterKill kills berthd while a large layer
// downloads through a slow proxy; after a restart the next pull asks for
// the rest with a Range request and fetches only the remainder.
func TestImagePullResumesAfterKill(t *testing.T) {
	d, reg, proxy := imageDaemon(t, "")
	const size = 12 << 20
	img := fixture.Image(t, fixture.Config{Cmd: []string{"sh"}},
		genLayer(t, "first"),
		fixture.Layer(t, fixture.LayerTar(t, []fixture.Entry{{Name: "big", Body: randomBytes(t, size)}})))
	reg.Push(t, reg.Ref("library/large:latest"), img)
	big := layerDigests(t, img)[1]
	proxy.setThrottle(2 << 20)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- runCmd(ctx, nil, filepath.Join(binDir, "berthctl"), "--address", d.socket, "pull", "large")
	}()
	deadline := time.Now().Add(30 * time.Second)
	for proxy.sentOf(big) < 3<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("the download did not progress: %d bytes", proxy.sentOf(big))
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.kill()
	if r := <-done; r.Code == 0 {
		t.Fatalf("pull succeeded although berthd was killed")
	}
	if in := dirEntries(t, filepath.Join(d.root, "content", "ingest")); len(in) == 0 {
		t.Fatal("no partial download was kept after the kill")
	}
	d.start()
	// The collection at start removed what the killed pull had finished
	// (its lease died with berthd) but kept the partial download.
	if b := dirEntries(t, filepath.Join(d.root, "content", "blobs", "sha256")); len(b) != 0 {
		t.Errorf("blobs of the killed pull left after restart: %v", b)
	}
	for _, drv := range []string{"overlay", "native"} {
		if s := dirEntries(t, filepath.Join(d.root, "snapshots", drv, "snapshots")); len(s) != 0 {
			t.Errorf("%s snapshots of the killed pull left after restart: %v", drv, s)
		}
	}
	if in := dirEntries(t, filepath.Join(d.root, "content", "ingest")); len(in) != 1 {
		t.Errorf("partial downloads after restart: %v, want the one to resume", in)
	}
	proxy.setThrottle(0)
	proxy.reset()
	d.mustCtl("pull", "large")
	rg := proxy.rangeOf(big)
	if !strings.HasPrefix(rg, "bytes=") || strings.HasPrefix(rg, "bytes=0-") {
		t.Errorf("resumed pull sent Range %q, want bytes=N- with N > 0", rg)
	}
	blobSize := int64(0)
	if ls, _ := img.Layers(); len(ls) == 2 {
		blobSize, _ = ls[1].Size()
	}
	if sent := proxy.sentOf(big); sent <= 0 || sent >= blobSize-(2<<20) {
		t.Errorf("resumed pull transferred %d of %d bytes; want only the remainder", sent, blobSize)
	}
	d.mustCtl("system", "prune")
	if in := dirEntries(t, filepath.Join(d.root, "content", "ingest")); len(in) > 0 {
		t.Errorf("partial downloads left after GC: %v", in)
	}
	if b := dirEntries(t, filepath.Join(d.root, "content", "blobs", "sha256")); len(b) != 4 {
		t.Errorf("%d blobs after GC, want 4 (manifest, config, 2 layers): %v", len(b), b)
	}
	for _, drv := range []string{"overlay", "native"} {
		if s := dirEntries(t, filepath.Join(d.root, "snapshots", drv, "snapshots")); s != nil && len(s) != 2 {
			t.Errorf("%s: %d snapshot dirs after GC, want the 2 layers: %v", drv, len(s), s)
		}
	}
}

func (d *daemon) ctlEnv(env []string, stdin string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "berthctl"), append([]string{"--address", d.socket}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return result{out.String(), errb.String(), code}
}

func TestImageRegistryAuth(t *testing.T) {
	reg := fixture.StartRegistry(t, fixture.WithAuth("berth", "s3cret"))
	reg.Push(t, reg.Ref("private/app:v1"), fixture.Image(t, fixture.Config{Cmd: []string{"sh"}}, genLayer(t, "private")))
	d := startDaemon(t)
	env := []string{"DOCKER_CONFIG=" + t.TempDir()}
	ref := reg.Ref("private/app:v1")
	if r := d.ctlEnv(env, "", "pull", ref); r.Code == 0 || !strings.Contains(r.Stderr, "authentication required") {
		t.Fatalf("pull without credentials: exit %d %q; want 'authentication required'", r.Code, r.Stderr)
	}
	if r := d.ctlEnv(env, "wrong\n", "login", "-u", "berth", "--password-stdin", reg.Addr); r.Code == 0 {
		t.Fatalf("login with a wrong password succeeded: %s", r.Stdout)
	}
	if r := d.ctlEnv(env, "s3cret\n", "login", "-u", "berth", "--password-stdin", reg.Addr); r.Code != 0 || !strings.Contains(r.Stdout, "Login Succeeded") {
		t.Fatalf("login: exit %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if r := d.ctlEnv(env, "", "pull", ref); r.Code != 0 {
		t.Fatalf("pull with credentials: exit %d %s", r.Code, r.Stderr)
	}
	if r := d.ctlEnv(env, "", "logout", reg.Addr); r.Code != 0 || !strings.Contains(r.Stdout, "Removing login credentials") {
		t.Fatalf("logout: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	d.mustCtl("rmi", ref)
	if r := d.ctlEnv(env, "", "pull", ref); r.Code == 0 || !strings.Contains(r.Stderr, "authentication required") {
		t.Fatalf("pull after logout: exit %d %q", r.Code, r.Stderr)
	}
}

func TestImagePushSaveLoad(t *testing.T) {
	d, reg, _ := imageDaemon(t, "")
	img := fixture.Image(t, fixture.Config{Cmd: []string{"sh"}}, genLayer(t, "p1"), genLayer(t, "p2"))
	digest := reg.Push(t, reg.Ref("library/app:v1"), img)
	d.mustCtl("pull", "app:v1")

	// Push to a second repository, then pull from it.
	second := reg.Ref("copies/app:v2")
	d.mustCtl("tag", "app:v1", second)
	out := d.mustCtl("push", second)
	for _, l := range layerDigests(t, img) {
		if !hasLine(out, l[7:19]+": Pushed") {
			t.Errorf("push output lacks %s: Pushed:\n%s", l[7:19], out)
		}
	}
	if !strings.Contains(out, "v2: digest: "+digest+" size: ") {
		t.Errorf("push output lacks the digest line:\n%s", out)
	}
	if out := d.mustCtl("push", second); !strings.Contains(out, ": Layer already exists") {
		t.Errorf("second push:\n%s", out)
	}
	d.mustCtl("rmi", second)
	if out := d.mustCtl("pull", second); !hasLine(out, "Digest: "+digest) {
		t.Errorf("pull of the pushed copy:\n%s", out)
	}

	// save → rmi → load gives the same image.
	archive := filepath.Join(t.TempDir(), "app.tar")
	d.mustCtl("save", "-o", archive, "app:v1")
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatal("skopeo not found: 'make test' installs Debian's skopeo")
	}
	for _, transport := range []string{"oci-archive:", "docker-archive:"} {
		out, err := exec.Command("skopeo", "inspect", transport+archive).CombinedOutput()
		if err != nil {
			t.Errorf("skopeo inspect %s: %v\n%s", transport, err, out)
		}
	}
	d.mustCtl("rmi", "app:v1")
	d.mustCtl("rmi", second)
	d.assertNoImageData()
	out = d.mustCtl("load", "-i", archive)
	if !hasLine(out, "Loaded image: app:v1") {
		t.Errorf("load output:\n%s", out)
	}
	in := d.inspect("app:v1")
	if tgt, _ := in["target"].(map[string]any); tgt["digest"] != digest {
		t.Errorf("loaded image digest %v, want %s", tgt["digest"], digest)
	}
	if in["chainId"] == nil {
		t.Errorf("loaded image has no chain ID")
	}
}

func TestImageLoadDockerSaveArchive(t *testing.T) {
	d := startDaemon(t)
	img := fixture.Image(t, fixture.Config{Cmd: []string{"sh"}}, genLayer(t, "d1"))
	archive := filepath.Join(t.TempDir(), "docker.tar")
	tag, err := name.NewTag("example.com/team/tool:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	out := d.mustCtl("load", "-i", archive)
	if !hasLine(out, "Loaded image: example.com/team/tool:1.0") {
		t.Fatalf("load:\n%s", out)
	}
	in := d.inspect("example.com/team/tool:1.0")
	if fmt.Sprint(in["diffIds"]) == "" || in["chainId"] == nil {
		t.Errorf("loaded docker archive: %v", in)
	}
	if r := d.ctl("load", "-i", "/etc/hostname"); r.Code == 0 {
		t.Errorf("loading a non-archive succeeded")
	}
}

func TestImageRemoveRefusedWhileAContainerUsesIt(t *testing.T) {
	d, reg, _ := imageDaemon(t, "")
	reg.Push(t, reg.Ref("library/busybox:latest"), fixture.Busybox(t))
	d.mustCtl("pull", "busybox")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := berthv1.NewContainersServiceClient(d.conn()).CreateContainer(ctx, &berthv1.CreateContainerRequest{
		Name: "user", Spec: &berthv1.ContainerSpec{Image: "busybox"}})
	if err != nil {
		t.Fatal(err)
	}
	r := d.ctl("rmi", "busybox")
	if r.Code == 0 || !strings.Contains(r.Stderr, "is used by container") {
		t.Fatalf("rmi of an image in use: exit %d %s", r.Code, r.Stderr)
	}
	if out := d.mustCtl("rmi", "-f", "busybox"); !hasLine(out, "Untagged: busybox:latest") {
		t.Errorf("rmi -f:\n%s", out)
	}
}

// TestImageLayersUnpackWhileOthersDownload checks the pipeline: the small
// first layer is unpacked while the large second one is still coming.
func TestImageLayersUnpackWhileOthersDownload(t *testing.T) {
	d, reg, proxy := imageDaemon(t, "")
	img := fixture.Image(t, fixture.Config{Cmd: []string{"sh"}}, genLayer(t, "small"),
		fixture.Layer(t, fixture.LayerTar(t, []fixture.Entry{{Name: "big", Body: randomBytes(t, 1<<20)}})))
	reg.Push(t, reg.Ref("library/pipe:latest"), img)
	ls := layerDigests(t, img)
	proxy.setThrottle(2 << 20)
	out := d.mustCtl("pull", "pipe")
	first := strings.Index(out, ls[0][7:19]+": Pull complete")
	second := strings.Index(out, ls[1][7:19]+": Download complete")
	if first < 0 || second < 0 || first > second {
		t.Errorf("layer 1 was not unpacked before layer 2 finished downloading:\n%s", out)
	}
}
