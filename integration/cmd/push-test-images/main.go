// Command push-test-images builds Berth's test images (hello-world from
// its source in this repository, busybox from Debian's /bin/busybox) and
// pushes them to a registry, as library/hello-world:latest and
// library/busybox:latest, so that the registry can stand in for docker.io.
// make demo and the benchmarks use it; run it from the repository root.
//
//	push-test-images 127.0.0.1:5000
package main

import (
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/integration/fixture"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: push-test-images REGISTRY_HOST:PORT")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "push-test-images:", err)
		os.Exit(1)
	}
}

func run(registry string) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	hello, err := fixture.HelloWorldImage(root)
	if err != nil {
		return err
	}
	busybox, err := fixture.BusyboxImage()
	if err != nil {
		return err
	}
	for repo, img := range map[string]v1.Image{"library/hello-world:latest": hello, "library/busybox:latest": busybox} {
		d, err := fixture.PushImage(registry+"/"+repo, img, "", "")
		if err != nil {
			return err
		}
		fmt.Printf("pushed %s/%s %s\n", registry, repo, d)
	}
	return nil
}
