package images

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/errdefs"
)

// Media types of manifests and indexes, Docker's and OCI's.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
)

// manifestAccept is what a resolve accepts, most specific first, so that a
// registry serving a multi-platform image sends the index and we choose.
var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageIndex,
	MediaTypeDockerManifestList,
	ocispec.MediaTypeImageManifest,
	MediaTypeDockerManifest,
}, ", ")

// maxManifestSize bounds manifests and configs read into memory: a
// registry cannot make berthd allocate without limit.
const maxManifestSize = 8 << 20

// Host configures how one registry host is reached.
type Host struct {
	// Mirrors are endpoints ("http://127.0.0.1:5000", "https://mirror.example")
	// tried in order before the registry itself.
	Mirrors []string
	// PlainHTTP talks HTTP instead of HTTPS to the registry itself.
	PlainHTTP bool
	// SkipVerify accepts any TLS certificate from the registry and its
	// mirrors.
	SkipVerify bool
}

// endpoint is one place a repository can be fetched from.
type endpoint struct {
	scheme string // "http" or "https"
	host   string // host[:port]
	mirror bool
	// skipVerify disables certificate checks for this endpoint.
	skipVerify bool
}

func (e endpoint) String() string { return e.scheme + "://" + e.host }

// Ref is a parsed, normalised image reference.
type Ref struct {
	// Name is the normalised reference ("docker.io/library/busybox:latest",
	// or "...@sha256:..." when pulled by digest).
	Name string
	// Domain is the registry ("docker.io", "127.0.0.1:5000").
	Domain string
	// Path is the repository path ("library/busybox").
	Path string
	// Tag is set for a tagged reference.
	Tag string
	// Digest is set for a reference by digest.
	Digest digest.Digest
	named  reference.Named
}

// Familiar is the short name Docker shows ("busybox:latest").
func (r Ref) Familiar() string { return reference.FamiliarString(r.named) }

// FamiliarRepo is the short repository name ("busybox", "library/busybox"
// under another registry).
func (r Ref) FamiliarRepo() string { return reference.FamiliarName(r.named) }

// ParseRef parses what a user types as Docker does: "hello-world" is
// "docker.io/library/hello-world:latest"; digests, tags and ports are kept.
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("image reference is empty: %w", errdefs.ErrInvalidArgument)
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Ref{}, fmt.Errorf("%q is not a valid image reference (want [registry/]repository[:tag|@digest]): %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	named = reference.TagNameOnly(named)
	r := Ref{Name: named.String(), Domain: reference.Domain(named), Path: reference.Path(named), named: named}
	if t, ok := named.(reference.Tagged); ok {
		r.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		r.Digest = d.Digest()
		if err := r.Digest.Validate(); err != nil {
			return Ref{}, fmt.Errorf("%q: digest: %v: %w", s, err, errdefs.ErrInvalidArgument)
		}
	}
	return r, nil
}

// object is what the manifest URL names: the digest when there is one,
// else the tag.
func (r Ref) object() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// isLoopback reports whether host (with an optional port) is localhost or
// in 127.0.0.0/8 or ::1, which Docker reaches over plain HTTP by default.
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// endpoints lists where a registry domain is reached: its mirrors, then
// the registry itself (Docker Hub's API host for docker.io).
func endpoints(domain string, h Host) ([]endpoint, error) {
	var out []endpoint
	for _, m := range h.Mirrors {
		u, err := url.Parse(m)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("registry %s: mirror %q is not an http:// or https:// URL: %w", domain, m, errdefs.ErrInvalidArgument)
		}
		out = append(out, endpoint{scheme: u.Scheme, host: u.Host, mirror: true, skipVerify: h.SkipVerify})
	}
	host := domain
	if domain == "docker.io" {
		host = "registry-1.docker.io"
	}
	scheme := "https"
	if h.PlainHTTP || isLoopback(host) {
		scheme = "http"
	}
	out = append(out, endpoint{scheme: scheme, host: host, skipVerify: h.SkipVerify})
	return out, nil
}

// AuthFrom turns the credentials of a request into an authenticator;
// empty credentials are anonymous access. The agent never stores them.
func AuthFrom(username, password, identityToken, registryToken string) authn.Authenticator {
	if username == "" && password == "" && identityToken == "" && registryToken == "" {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{Username: username, Password: password, IdentityToken: identityToken, RegistryToken: registryToken})
}

// repoClient talks to one repository on one endpoint with the token or
// basic auth the endpoint asked for.
type repoClient struct {
	ep     endpoint
	repo   string
	client *http.Client
}

// baseTransport is the HTTP transport for one endpoint: no overall
// timeout (a layer may take long), but bounded dial and header waits so a
// dead registry fails fast.
func baseTransport(ep endpoint) http.RoundTripper {
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		// Layers are already compressed: asking for gzip transfer
		// encoding would only make Range offsets ambiguous.
		DisableCompression: true,
	}
	if ep.skipVerify {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the operator asked for it per registry
	}
	return t
}

// newRepoClient performs the auth handshake (ping, then token or basic)
// for repo on ep with the given actions ("pull", "push").
func newRepoClient(ctx context.Context, ep endpoint, repo string, auth authn.Authenticator, actions ...string) (*repoClient, error) {
	opts := []name.Option{name.WeakValidation}
	if ep.scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(ep.host, opts...)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %v: %w", ep.host, err, errdefs.ErrInvalidArgument)
	}
	scope := "repository:" + repo + ":" + strings.Join(actions, ",")
	rt, err := transport.NewWithContext(ctx, reg, auth, baseTransport(ep), []string{scope})
	if err != nil {
		return nil, registryErr(ep, repo, err)
	}
	return &repoClient{ep: ep, repo: repo, client: &http.Client{Transport: rt}}, nil
}

func (c *repoClient) url(kind, object string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", c.ep.scheme, c.ep.host, c.repo, kind, object)
}

// registryErr turns transport and HTTP failures into errdefs kinds with a
// message a user can act on.
func registryErr(ep endpoint, repo string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return statusErr(ep, repo, te.StatusCode, err.Error())
	}
	return fmt.Errorf("registry %s: %v: %w", ep, err, errdefs.ErrUnavailable)
}

func statusErr(ep endpoint, repo string, code int, detail string) error {
	switch code {
	case http.StatusUnauthorized:
		return fmt.Errorf("access to %s on %s denied: %s: give credentials with 'berthctl login %s': %w", repo, ep, detail, ep.host, errdefs.ErrUnauthenticated)
	case http.StatusForbidden:
		return fmt.Errorf("access to %s on %s forbidden: %s: %w", repo, ep, detail, errdefs.ErrPermissionDenied)
	case http.StatusNotFound:
		return fmt.Errorf("%s on %s: %s: %w", repo, ep, detail, errdefs.ErrNotFound)
	case http.StatusTooManyRequests:
		return fmt.Errorf("registry %s: too many requests: %s: %w", ep, detail, errdefs.ErrResourceExhausted)
	}
	return fmt.Errorf("registry %s: HTTP %d: %s: %w", ep, code, detail, errdefs.ErrUnavailable)
}

func (c *repoClient) do(req *http.Request, ok ...int) (*http.Response, error) {
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, registryErr(c.ep, c.repo, err)
	}
	for _, code := range ok {
		if resp.StatusCode == code {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	detail := strings.TrimSpace(string(body))
	if detail == "" {
		detail = resp.Status
	}
	return nil, statusErr(c.ep, c.repo, resp.StatusCode, detail)
}

// resolve asks for the manifest of object (tag or digest) with HEAD and
// returns its descriptor. Registries that omit Docker-Content-Digest on
// HEAD get a GET, whose body is hashed.
func (c *repoClient) resolve(ctx context.Context, object string) (ocispec.Descriptor, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.url("manifests", object), nil)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.do(req, http.StatusOK)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	resp.Body.Close()
	desc := ocispec.Descriptor{MediaType: mediaTypeOf(resp.Header.Get("Content-Type"))}
	dgst := digest.Digest(resp.Header.Get("Docker-Content-Digest"))
	size, _ := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
	if dgst != "" && dgst.Validate() == nil && size > 0 {
		desc.Digest, desc.Size = dgst, size
		return desc, nil
	}
	// GET and hash it ourselves.
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, c.url("manifests", object), nil)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err = c.do(req, http.StatusOK)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return ocispec.Descriptor{}, registryErr(c.ep, c.repo, err)
	}
	if len(body) > maxManifestSize {
		return ocispec.Descriptor{}, fmt.Errorf("manifest %s of %s is larger than %d bytes: %w", object, c.repo, maxManifestSize, errdefs.ErrInvalidArgument)
	}
	desc.MediaType = mediaTypeOf(resp.Header.Get("Content-Type"))
	desc.Digest, desc.Size = digest.FromBytes(body), int64(len(body))
	return desc, nil
}

func mediaTypeOf(contentType string) string {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.TrimSpace(mt)
}

// open returns the content.OpenFunc for a blob or a manifest (kind is
// "blobs" or "manifests"): a GET with Range when resuming. A server that
// ignores the Range sends 200 and the whole blob, which Fetch handles.
func (c *repoClient) open(kind string, desc ocispec.Descriptor) func(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
	return func(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(kind, desc.Digest.String()), nil)
		if err != nil {
			return nil, 0, err
		}
		if kind == "manifests" {
			accept := manifestAccept
			if desc.MediaType != "" && !strings.Contains(accept, desc.MediaType) {
				accept = desc.MediaType + ", " + accept
			}
			req.Header.Set("Accept", accept)
		}
		if offset > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		}
		resp, err := c.do(req, http.StatusOK, http.StatusPartialContent)
		if err != nil {
			return nil, 0, fmt.Errorf("fetch %s: %w", desc.Digest, err)
		}
		if resp.StatusCode == http.StatusPartialContent {
			return resp.Body, offset, nil
		}
		return resp.Body, 0, nil
	}
}

// blobExists asks with HEAD whether the repository has the blob.
func (c *repoClient) blobExists(ctx context.Context, d digest.Digest) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.url("blobs", d.String()), nil)
	if err != nil {
		return false, err
	}
	resp, err := c.do(req, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// NormalizeRegistry maps the names users give Docker Hub
// ("index.docker.io", "https://index.docker.io/v1/", "registry-1.docker.io")
// to "docker.io", and strips a scheme and path from others.
func NormalizeRegistry(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	switch s {
	case "", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return s
}

// Authenticate checks credentials against a registry (not its mirrors):
// the token handshake or a basic-auth GET /v2/ must succeed.
func (s *Service) Authenticate(ctx context.Context, registry string, auth authn.Authenticator) error {
	domain := NormalizeRegistry(registry)
	eps, err := endpoints(domain, s.host(domain))
	if err != nil {
		return err
	}
	ep := eps[len(eps)-1]
	opts := []name.Option{name.WeakValidation}
	if ep.scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(ep.host, opts...)
	if err != nil {
		return fmt.Errorf("registry %q: %v: %w", registry, err, errdefs.ErrInvalidArgument)
	}
	rt, err := transport.NewWithContext(ctx, reg, auth, baseTransport(ep), nil)
	if err != nil {
		return registryErr(ep, "the registry", err)
	}
	c := &repoClient{ep: ep, client: &http.Client{Transport: rt}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.String()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := c.do(req, http.StatusOK)
	if err != nil {
		if errors.Is(err, errdefs.ErrUnauthenticated) {
			return fmt.Errorf("login to %s failed: wrong username or password: %w", domain, errdefs.ErrUnauthenticated)
		}
		return err
	}
	resp.Body.Close()
	return nil
}
