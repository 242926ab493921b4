// Command demo-registry runs Debian's docker-registry on a free loopback
// port, pushes Berth's test images to it (hello-world from its source in
// this repository, busybox from /bin/busybox) as library/hello-world:latest
// and library/busybox:latest, writes the registry's host:port to a file,
// and serves until SIGTERM or SIGINT. make demo uses it as the stand-in
// for docker.io; run it from the repository root. With -large it also
// pushes the benchmark's cold-pull image as bench/big:latest, for
// profiling a pull by hand.
//
//	demo-registry -dir /tmp/reg -addr-file /tmp/reg/addr [-large]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/integration/fixture"
)

func main() {
	dir := flag.String("dir", "", "directory for the registry's storage (required)")
	addrFile := flag.String("addr-file", "", "file to write the registry's host:port to (required)")
	large := flag.Bool("large", false, "also push the benchmark's large pull image as bench/big:latest")
	flag.Parse()
	if *dir == "" || *addrFile == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*dir, *addrFile, *large); err != nil {
		fmt.Fprintln(os.Stderr, "demo-registry:", err)
		os.Exit(1)
	}
}

func run(dir, addrFile string, large bool) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	reg, err := fixture.RunRegistry(dir)
	if err != nil {
		return err
	}
	defer reg.Stop()
	hello, err := fixture.HelloWorldImage(root)
	if err != nil {
		return err
	}
	busybox, err := fixture.BusyboxImage()
	if err != nil {
		return err
	}
	for _, x := range []struct {
		repo string
		img  v1.Image
	}{{"library/hello-world:latest", hello}, {"library/busybox:latest", busybox}} {
		if _, err := fixture.PushImage(reg.Ref(x.repo), x.img, "", ""); err != nil {
			return err
		}
	}
	if large {
		img, _, err := fixture.GenerateLargeImage(fixture.LargeSpec{})
		if err != nil {
			return err
		}
		if _, err := fixture.PushImage(reg.Ref("bench/big:latest"), img, "", ""); err != nil {
			return err
		}
	}
	tmp := addrFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(reg.Addr+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, addrFile); err != nil {
		return err
	}
	<-sigs
	return nil
}
