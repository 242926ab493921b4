package ctl

import (
	"errors"
	"fmt"
	"io"

	"github.com/distribution/reference"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// familiar is the short form of a reference Docker shows ("busybox:latest").
func familiar(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ref
	}
	return reference.FamiliarString(reference.TagNameOnly(named))
}

// printPull prints a pull's progress as plain lines, Docker's words:
// "latest: Pulling from library/busybox", "<id>: Pull complete",
// "Digest: …", "Status: …".
func printPull(w io.Writer, stream berthv1.ImagesService_PullClient, ref string) error {
	var sawFetch bool
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch u := resp.Update.(type) {
		case *berthv1.PullResponse_Resolved:
			named, err := reference.ParseNormalizedNamed(u.Resolved.Name)
			tag := "latest"
			path := u.Resolved.Name
			if err == nil {
				if t, ok := named.(reference.Tagged); ok {
					tag = t.Tag()
				}
				path = reference.Path(named)
			}
			fmt.Fprintf(w, "%s: Pulling from %s\n", tag, path)
		case *berthv1.PullResponse_Progress:
			p := u.Progress
			switch p.Status {
			case berthv1.ProgressStatus_PROGRESS_STATUS_PULL_COMPLETE:
				sawFetch = true
				fmt.Fprintf(w, "%s: Pull complete\n", p.Id)
			case berthv1.ProgressStatus_PROGRESS_STATUS_ALREADY_EXISTS:
				fmt.Fprintf(w, "%s: Already exists\n", p.Id)
			}
		case *berthv1.PullResponse_Done:
			img := u.Done.GetImage()
			fmt.Fprintf(w, "Digest: %s\n", img.GetTarget().GetDigest())
			if u.Done.UpToDate && !sawFetch {
				fmt.Fprintf(w, "Status: Image is up to date for %s\n", familiar(img.GetName()))
			} else {
				fmt.Fprintf(w, "Status: Downloaded newer image for %s\n", familiar(img.GetName()))
			}
		}
	}
}
