package integration

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func TestRunShowsContainerView(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, w, out := r.runToExit(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "echo $$; hostname; id; cat /proc/self/cgroup; ls /"}})
	if w.ExitStatus != 0 {
		t.Fatalf("exit %d, output:\n%s", w.ExitStatus, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 4 || lines[0] != "1" {
		t.Fatalf("the shell is not PID 1:\n%s", out)
	}
	if lines[1] != c.Id[:12] {
		t.Errorf("hostname %q, want the short id %q", lines[1], c.Id[:12])
	}
	if !strings.HasPrefix(lines[2], "uid=0(root) gid=0(root)") {
		t.Errorf("id: %q", lines[2])
	}
	root := strings.Fields(strings.Join(lines[3:], " "))
	has := map[string]bool{}
	for _, f := range root {
		has[f] = true
	}
	for _, want := range []string{"bin", "etc", "proc", "dev", "sys", "tmp", "var"} {
		if !has[want] {
			t.Errorf("ls / lacks %s: %v", want, root)
		}
	}
	// Nothing of the host's own root: pick host entries the image lacks.
	ents, _ := os.ReadDir("/")
	for _, e := range ents {
		switch e.Name() {
		case "bin", "etc", "proc", "dev", "sys", "tmp", "var", "usr", "root", "home", "sbin":
			continue
		}
		if has[e.Name()] {
			t.Errorf("host's /%s is visible in the container", e.Name())
		}
	}
	got, err := r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: c.Id})
	if err != nil {
		t.Fatal(err)
	}
	if st := got.Container.Status; st.State != berthv1.ContainerState_CONTAINER_STATE_EXITED || st.ExitCode != 0 || st.FinishedAt == nil {
		t.Errorf("status after exit: %+v", st)
	}
}
