package ctl

import (
	"math/rand/v2"
	"testing"

	"github.com/distribution/reference"
)

// refCorpus holds references a user or a registry may give, valid and
// not.
var refCorpus = []string{
	"busybox", "busybox:latest", "busybox:1.36", "library/busybox", "docker.io/library/busybox:1",
	"index.docker.io/library/busybox", "index.docker.io/foo/bar:t", "foo/bar", "foo/bar/baz", "docker.io/foo/bar/baz:x",
	"docker.io/library/a/b", "library/a/b", "ghcr.io/x/y:z", "localhost/x", "localhost:5000/x/y:1", "127.0.0.1:5000/bench/big:latest",
	"[::1]:5000/x", "[fe80::1]/a", "Foo/bar", "foo/Bar", "FOO.io/bar", "my-registry.example.com:443/team/app:v1.2.3",
	"a.b/c", "x:y:z", "busybox@sha256:" + "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4",
	"busybox:1@sha256:" + "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4", "busybox@sha256:abc",
	"a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4", "a__b", "a___b", "a--b", "a-", "-a", "a..b", "a.b.c",
	"a_b", "a/b_", "", ":", "/", "a/", "/a", "a//b", "busybox:", "busybox:-x", "busybox:.x", "busybox:_x", "UPPER", "x/y@",
	"host:port/x", "host:99999/x", "ho_st/x", "-host.io/x", "host-.io/x", "sub.host.io/a/b/c/d:tag_1.0-rc",
}

func TestParseRefMatchesDistributionReference(t *testing.T) {
	check := func(s string) {
		t.Helper()
		r, ok := parseRef(s)
		named, err := reference.ParseNormalizedNamed(s)
		if (err == nil) != ok {
			t.Fatalf("parseRef(%q) ok=%v, the library says %v", s, ok, err)
		}
		if !ok {
			return
		}
		if r.name() != named.Name() {
			t.Errorf("%q: name %q, want %q", s, r.name(), named.Name())
		}
		if got, want := r.withTagAndDigest(r.familiarName()), reference.FamiliarString(named); got != want {
			t.Errorf("%q: familiar %q, want %q", s, got, want)
		}
		if got, want := r.familiarName(), reference.FamiliarName(named); got != want {
			t.Errorf("%q: familiar name %q, want %q", s, got, want)
		}
		if got, want := r.domain, reference.Domain(named); got != want {
			t.Errorf("%q: domain %q, want %q", s, got, want)
		}
		if got, want := r.path, reference.Path(named); got != want {
			t.Errorf("%q: path %q, want %q", s, got, want)
		}
		d := r.defaultTag()
		if got, want := d.withTagAndDigest(d.name()), reference.TagNameOnly(named).String(); got != want {
			t.Errorf("%q: with default tag %q, want %q", s, got, want)
		}
	}
	for _, s := range refCorpus {
		check(s)
	}
	// Random strings over the characters that matter.
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := "ab9Z.-_:/@[]l"
	for i := 0; i < 50000; i++ {
		b := make([]byte, 1+rng.IntN(14))
		for j := range b {
			b[j] = alphabet[rng.IntN(len(alphabet))]
		}
		check(string(b))
	}
}
