package integration

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/integration/fixture"
)

// TestCLICommitNative: on the native snapshotter, commit diffs the
// container's tree against a view of its image (layer.DiffDirs) and
// leaves that view neither mounted nor recorded.
func TestCLICommitNative(t *testing.T) {
	reg := fixture.StartRegistry(t)
	reg.Push(t, reg.Ref("library/busybox:latest"), fixture.Busybox(t))
	r := startRuntime(t, withMoreConfig("snapshotter = \"native\"\n"+mirrorConfig(reg.Addr)))
	d := r.d
	d.mustCtl("pull", "-q", "busybox")
	d.mustCtl("run", "--name", "n", "busybox", "sh", "-c", "echo native > /n.txt; rm /bin/vi")
	d.mustCtl("commit", "n", "native:v1")
	if got := d.mustCtl("run", "native:v1", "sh", "-c", "cat /n.txt; [ -e /bin/vi ] || echo vi gone"); got != "native\nvi gone\n" {
		t.Errorf("run of the image committed on native printed %q", got)
	}
	for _, m := range mountsUnder(d.state) {
		if strings.Contains(m, "berth-commit") {
			t.Errorf("left mounted: %s", m)
		}
	}
}
