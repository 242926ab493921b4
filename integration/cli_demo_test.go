package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMakeDemo runs hack/demo.sh (what `make demo` runs) and checks its
// transcript tells Docker's hello-world story: the first run finds no
// image and pulls it, the second just runs; both print the greeting.
func TestMakeDemo(t *testing.T) {
	bin, err := filepath.Abs(binDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// One stream, as a terminal shows it: run prints the pull on stderr.
	res := runCmd(ctx, []string{"BERTH_BIN=" + bin}, "bash", "-c", "bash ../hack/demo.sh 2>&1")
	out := res.Stdout + res.Stderr
	if res.Code != 0 {
		t.Fatalf("hack/demo.sh exited %d:\n%s", res.Code, out)
	}
	for _, c := range []struct {
		s    string
		want int
	}{
		{"Hello from Berth!", 2},
		{"Unable to find image 'hello-world:latest' locally", 1},
		{"latest: Pulling from library/hello-world", 1},
		{"Status: Downloaded newer image for hello-world:latest", 1},
		{"$ berthctl run hello-world", 2},
	} {
		if got := strings.Count(out, c.s); got != c.want {
			t.Errorf("the demo shows %q %d times, want %d:\n%s", c.s, got, c.want, out)
		}
	}
	// The second run pulls nothing: no pull output after the first greeting.
	first := strings.Index(out, "Hello from Berth!")
	if rest := out[first:]; strings.Contains(rest, "Pulling") || strings.Contains(rest, "Pull complete") {
		t.Errorf("the second run pulled again:\n%s", rest)
	}
	if !strings.Contains(out, "Exited (0)") {
		t.Errorf("ps -a in the demo shows no exited container:\n%s", out)
	}
}
