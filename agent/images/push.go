package images

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// PushOptions configures Push.
type PushOptions struct {
	// Auth authenticates to the registry; nil is anonymous.
	Auth authn.Authenticator
	// Progress, if set, receives per-blob progress. Calls are serialised.
	Progress func(*berthv1.Progress)
}

// PushResult is what Push wrote.
type PushResult struct {
	// Name is the normalised reference pushed to.
	Name string
	// Digest and Size are the pushed manifest's.
	Digest string
	Size   int64
}

// Push uploads the image named ref to its registry (never to a mirror):
// each layer and the config unless the repository has it already, then
// the manifest under the tag. An image pulled from a multi-platform index
// is pushed as the single manifest Berth holds (the index's other
// platforms were never downloaded), as Docker's classic store does.
func (s *Service) Push(ctx context.Context, refStr string, opts PushOptions) (*PushResult, error) {
	ref, err := ParseRef(refStr)
	if err != nil {
		return nil, err
	}
	if ref.Digest != "" {
		return nil, fmt.Errorf("push %s: push a tag, not a digest: %w", refStr, errdefs.ErrInvalidArgument)
	}
	img, err := s.opts.DB.Images().Get(ctx, ref.Name)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("an image does not exist locally with the tag: %s: %w", ref.Familiar(), errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(*berthv1.Progress) {}
	}
	if opts.Auth == nil {
		opts.Auth = authn.Anonymous
	}
	l := s.newLease()
	defer s.release(l)
	manifest := fromProto(img.GetManifest())
	if manifest.Digest == "" {
		manifest = fromProto(img.GetTarget())
	}
	blobs := []ocispec.Descriptor{}
	for _, ld := range img.GetLayers() {
		blobs = append(blobs, fromProto(ld))
	}
	blobs = append(blobs, fromProto(img.GetConfigDescriptor()))
	for _, b := range append(blobs, manifest) {
		s.addBlob(l, b.Digest.String())
		if _, err := s.opts.Content.Info(ctx, b.Digest); err != nil {
			return nil, fmt.Errorf("push %s: blob %s is not in the content store (pull the image again): %w", ref.Familiar(), b.Digest, err)
		}
	}
	eps, err := endpoints(ref.Domain, s.host(ref.Domain))
	if err != nil {
		return nil, err
	}
	rc, err := newRepoClient(ctx, eps[len(eps)-1], ref.Path, opts.Auth, "pull", "push")
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", ref.Familiar(), err)
	}
	for _, b := range blobs[:len(blobs)-1] {
		progress(progressOf(b, berthv1.ProgressStatus_PROGRESS_STATUS_PREPARING, 0, b.Size))
	}
	for i, b := range blobs {
		isLayer := i < len(blobs)-1
		report := func(st berthv1.ProgressStatus, cur int64) {
			if isLayer {
				progress(progressOf(b, st, cur, b.Size))
			}
		}
		exists, err := rc.blobExists(ctx, b.Digest)
		if err != nil {
			return nil, fmt.Errorf("push %s: %w", ref.Familiar(), err)
		}
		if exists {
			report(berthv1.ProgressStatus_PROGRESS_STATUS_LAYER_EXISTS, b.Size)
			continue
		}
		if err := s.uploadBlob(ctx, rc, b, func(cur int64) { report(berthv1.ProgressStatus_PROGRESS_STATUS_PUSHING, cur) }); err != nil {
			return nil, fmt.Errorf("push %s: blob %s: %w", ref.Familiar(), b.Digest, err)
		}
		report(berthv1.ProgressStatus_PROGRESS_STATUS_PUSHED, b.Size)
	}
	body, err := s.readBlob(ctx, manifest)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, rc.url("manifests", ref.Tag), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", manifest.MediaType)
	resp, err := rc.do(req, http.StatusCreated, http.StatusOK, http.StatusAccepted)
	if err != nil {
		return nil, fmt.Errorf("push %s: manifest: %w", ref.Familiar(), err)
	}
	resp.Body.Close()
	return &PushResult{Name: ref.Name, Digest: manifest.Digest.String(), Size: int64(len(body))}, nil
}

// progressReader reports bytes read, at most every 256 KiB.
type progressReader struct {
	r      io.Reader
	n      int64
	last   int64
	report func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.n-p.last >= 256<<10 {
		p.last = p.n
		p.report(p.n)
	}
	return n, err
}

// uploadBlob starts an upload session and sends the blob in one PUT (the
// monolithic upload every registry supports).
func (s *Service) uploadBlob(ctx context.Context, rc *repoClient, desc ocispec.Descriptor, report func(int64)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rc.url("blobs", "uploads/"), nil)
	if err != nil {
		return err
	}
	resp, err := rc.do(req, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	loc, err := req.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return fmt.Errorf("registry %s gave no usable upload location: %w", rc.ep, errdefs.ErrUnavailable)
	}
	q := loc.Query()
	q.Set("digest", desc.Digest.String())
	loc.RawQuery = q.Encode()
	ra, err := s.opts.Content.ReaderAt(ctx, desc)
	if err != nil {
		return err
	}
	defer ra.Close()
	open := func() io.ReadCloser {
		return io.NopCloser(&progressReader{r: io.NewSectionReader(ra, 0, ra.Size()), report: report})
	}
	put, err := http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), open())
	if err != nil {
		return err
	}
	put.ContentLength = ra.Size()
	put.GetBody = func() (io.ReadCloser, error) { return open(), nil }
	put.Header.Set("Content-Type", "application/octet-stream")
	resp, err = rc.do(put, http.StatusCreated, http.StatusNoContent, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
