package ctl

// Image references for display. berthd parses and normalizes every
// reference it is given (with github.com/distribution/reference); berthctl
// only needs to show names the way Docker does. It used that library too,
// but linking it costs every berthctl run its start-up work (some 500 KiB
// of regexps compiled before main, with go-digest's), a noticeable part of
// a command that should take milliseconds. So the few rules are written
// out here, and refs_test.go checks them against the library on a corpus
// of tricky references.

import "strings"

const (
	dockerDomain  = "docker.io"
	legacyDomain  = "index.docker.io"
	officialRepos = "library/"
	maxNameLength = 255
)

// imageRef is a reference split Docker's way: docker.io and library/
// filled in for short names.
type imageRef struct {
	domain, path, tag, digest string
}

// parseRef splits and normalizes s as distribution/reference's
// ParseNormalizedNamed does; ok is false for what it would refuse.
func parseRef(s string) (r imageRef, ok bool) {
	if isHex64(s) {
		return r, false // an image ID, not a name
	}
	name := s
	if i := strings.IndexByte(name, '@'); i >= 0 {
		name, r.digest = name[:i], name[i+1:]
		if !validDigest(r.digest) {
			return r, false
		}
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name, r.tag = name[:i], name[i+1:]
		if !validTag(r.tag) {
			return r, false
		}
	}
	r.domain, r.path = dockerDomain, name
	if i := strings.IndexByte(name, '/'); i >= 0 {
		first := name[:i]
		if strings.ContainsAny(first, ".:") || first == "localhost" || strings.ToLower(first) != first {
			r.domain, r.path = first, name[i+1:]
		}
	}
	if r.domain == legacyDomain {
		r.domain = dockerDomain
	}
	if r.domain == dockerDomain && !strings.Contains(r.path, "/") {
		r.path = officialRepos + r.path
	}
	if !validDomain(r.domain) || !validPath(r.path) || len(r.domain)+1+len(r.path) > maxNameLength {
		return imageRef{}, false
	}
	return r, true
}

// name is the normalized repository, e.g. docker.io/library/busybox.
func (r imageRef) name() string { return r.domain + "/" + r.path }

// familiarName is the repository as Docker shows it: busybox, foo/bar,
// ghcr.io/x/y.
func (r imageRef) familiarName() string {
	if r.domain == dockerDomain {
		if rest, ok := strings.CutPrefix(r.path, officialRepos); ok && !strings.Contains(rest, "/") {
			return rest
		}
		return r.path
	}
	return r.name()
}

// withTagAndDigest renders name with the tag and digest, if any.
func (r imageRef) withTagAndDigest(name string) string {
	if r.tag != "" {
		name += ":" + r.tag
	}
	if r.digest != "" {
		name += "@" + r.digest
	}
	return name
}

// defaultTag gives a reference with neither tag nor digest the tag latest.
func (r imageRef) defaultTag() imageRef {
	if r.tag == "" && r.digest == "" {
		r.tag = "latest"
	}
	return r
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return true
}

func isLowerHex(c byte) bool   { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }
func isLowerAlnum(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' }
func isAlnum(c byte) bool      { return isLowerAlnum(c) || 'A' <= c && c <= 'Z' }

// validDigest: algorithm:encoded, as go-digest's grammar (the encoded
// part at least 32 characters).
func validDigest(d string) bool {
	alg, enc, ok := strings.Cut(d, ":")
	if !ok || alg == "" || len(enc) < 32 {
		return false
	}
	// algorithm: [a-z0-9]+ separated by [+._-]
	sep := true
	for i := 0; i < len(alg); i++ {
		c := alg[i]
		switch {
		case isLowerAlnum(c):
			sep = false
		case c == '+' || c == '.' || c == '_' || c == '-':
			if sep {
				return false
			}
			sep = true
		default:
			return false
		}
	}
	if sep {
		return false
	}
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		if !(isAlnum(c) || c == '=' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validTag: [\w][\w.-]{0,127}.
func validTag(t string) bool {
	if t == "" || len(t) > 128 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		word := isAlnum(c) || c == '_'
		if !word && (i == 0 || c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// validPath: components of [a-z0-9]+ joined by '.', '_', '__' or runs of
// '-', separated by '/'.
func validPath(p string) bool {
	if p == "" {
		return false
	}
	for _, comp := range strings.Split(p, "/") {
		if comp == "" || !isLowerAlnum(comp[0]) || !isLowerAlnum(comp[len(comp)-1]) {
			return false
		}
		for i := 0; i < len(comp); {
			c := comp[i]
			switch {
			case isLowerAlnum(c):
				i++
			case c == '.':
				if !isLowerAlnum(comp[i+1]) {
					return false
				}
				i++
			case c == '_':
				if comp[i+1] == '_' {
					i++
				}
				if !isLowerAlnum(comp[i+1]) {
					return false
				}
				i++
			case c == '-':
				for comp[i] == '-' {
					i++
				}
				if !isLowerAlnum(comp[i]) {
					return false
				}
			default:
				return false
			}
		}
	}
	return true
}

// validDomain: host names (labels of letters, digits and inner '-'
// joined by '.'), or an IPv6 address in brackets, with an optional port.
func validDomain(d string) bool {
	host, port := d, ""
	if strings.HasPrefix(d, "[") {
		end := strings.IndexByte(d, ']')
		if end < 0 {
			return false
		}
		host, port = d[:end+1], d[end+1:]
		for i := 1; i < len(host)-1; i++ {
			c := host[i]
			if !(isLowerHex(c) || 'A' <= c && c <= 'F' || c == ':' || c == '.') {
				return false
			}
		}
		if len(host) < 4 {
			return false
		}
	} else if i := strings.IndexByte(d, ':'); i >= 0 {
		host, port = d[:i], d[i:]
		for _, label := range strings.Split(host, ".") {
			if !validLabel(label) {
				return false
			}
		}
	} else {
		for _, label := range strings.Split(host, ".") {
			if !validLabel(label) {
				return false
			}
		}
	}
	if port != "" {
		digits := strings.TrimPrefix(port, ":")
		if digits == port || digits == "" {
			return false
		}
		for i := 0; i < len(digits); i++ {
			if digits[i] < '0' || digits[i] > '9' {
				return false
			}
		}
	}
	return true
}

func validLabel(l string) bool {
	if l == "" || !isAlnum(l[0]) || !isAlnum(l[len(l)-1]) {
		return false
	}
	for i := 0; i < len(l); i++ {
		if !isAlnum(l[i]) && l[i] != '-' {
			return false
		}
	}
	return true
}
