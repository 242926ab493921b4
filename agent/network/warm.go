package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// Warm attachments: the Manager can keep one attachment to the default
// network made ahead, a pinned namespace on which CNI ADD has run, so that
// a container started on that network adopts it instead of waiting for
// ADD (two plugin execs, ~30 ms here) before its init can be created.
//
// A warm attachment is an ordinary record under the reserved namespace
// warmNS, which no container can have (namespace names do not start with
// '_'). It is never Done, so Recover tears down one that a crash left,
// and it is not a member or a peer of the network. Adoption moves what
// ADD made (the CNI container ID, the namespace, the result) into the
// container's record, saved before the warm record is removed: a crash
// in between leaves two records naming one attachment, and both are torn
// down (DEL is idempotent). The namespace stays pinned where it was made;
// the record says where (NetnsPath). A container that publishes ports,
// has aliases or joins another network attaches the usual way.
const warmNS = "_warm"

// warmRefillDelay is how long after an adoption the next warm attachment
// is made at the latest; a container's removal makes it sooner.
const warmRefillDelay = time.Second

// warmState is the Manager's warm attachment: wanted says whether to keep
// one; making is set while a goroutine makes one; ready is one to adopt.
type warmState struct {
	mu     sync.Mutex
	wanted bool
	making bool
	ready  *record
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// KeepWarm makes the Manager keep one warm attachment to the default
// network from now on, until Close. Call it after Recover.
func (m *Manager) KeepWarm() {
	w := &m.warm
	w.mu.Lock()
	if w.ctx == nil {
		w.ctx, w.cancel = context.WithCancel(context.Background())
	}
	w.wanted = true
	w.mu.Unlock()
	m.refillWarm()
}

// refillWarm starts making a warm attachment if one is wanted and there
// is none, ready or in the making.
func (m *Manager) refillWarm() {
	w := &m.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wanted || w.making || w.ready != nil {
		return
	}
	w.making = true
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		r, err := m.makeWarm(w.ctx)
		w.mu.Lock()
		w.making = false
		if err == nil && w.wanted {
			w.ready, r = r, nil
		}
		w.mu.Unlock()
		if err != nil {
			m.log.Warn("warm network attachment", "network", DefaultNetwork, "error", err)
		}
		if r != nil { // made, but no longer wanted
			m.dropWarm(r)
		}
	}()
}

// makeWarm attaches a fresh namespace to the default network.
func (m *Manager) makeWarm(ctx context.Context) (*record, error) {
	var b [16]byte
	rand.Read(b[:])
	k := key{warmNS, hex.EncodeToString(b[:])}
	r := &record{Namespace: k.ns, ID: k.id, Hostname: "warm", Mode: "bridge", Network: DefaultNetwork,
		IfName: "eth0", CNIID: cniID(k), NetnsPath: m.netnsPath(k)}
	n, err := m.loadNetwork(DefaultNetwork)
	if err != nil {
		return nil, err
	}
	r.ConfList = n.Bytes
	m.mu.Lock()
	err = m.ensureRules(ctx, n)
	if err == nil {
		err = m.saveRecord(r)
	}
	if err == nil {
		m.records[k] = r
	}
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*record, error) {
		if terr := m.teardown(context.WithoutCancel(ctx), k); terr != nil {
			m.log.Error("cleanup of a failed warm attachment", "error", terr)
		}
		return nil, err
	}
	if err := newPinnedNetns(r.NetnsPath); err != nil {
		return fail(err)
	}
	list, err := libcni.NetworkConfFromBytes(r.ConfList)
	if err != nil {
		return fail(err)
	}
	atts, ip, err := m.add(ctx, k, r.Network, r.IfName, list, m.runtimeConf(r))
	if err != nil {
		return fail(err)
	}
	m.mu.Lock()
	r.Attachments, r.IP = atts, ip
	err = m.saveRecord(r)
	m.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	return r, nil
}

// takeWarm hands the ready warm attachment of network, made with the
// config list conf, to the container record r, or reports false. Caller
// holds mu; r is not saved yet.
func (m *Manager) takeWarm(r *record, conf []byte) bool {
	w := &m.warm
	w.mu.Lock()
	wr := w.ready
	if wr == nil || wr.Network != r.Network || string(wr.ConfList) != string(conf) {
		w.mu.Unlock()
		return false
	}
	w.ready = nil
	w.mu.Unlock()
	adopted := *r
	adopted.ConfList, adopted.CNIID, adopted.IfName, adopted.NetnsPath = wr.ConfList, wr.CNIID, wr.IfName, wr.NetnsPath
	adopted.Attachments, adopted.IP = wr.Attachments, wr.IP
	if err := m.saveRecord(&adopted); err != nil {
		// Not adopted after all: it stays warm, and r attaches the usual
		// way, unchanged.
		w.mu.Lock()
		w.ready = wr
		w.mu.Unlock()
		return false
	}
	*r = adopted
	wk := key{wr.Namespace, wr.ID}
	delete(m.records, wk)
	if err := os.Remove(m.recordPath(wk)); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("remove the record of an adopted warm attachment", "error", err)
	}
	return true
}

// dropWarm tears a warm attachment down.
func (m *Manager) dropWarm(r *record) {
	if err := m.teardown(context.Background(), key{r.Namespace, r.ID}); err != nil {
		m.log.Warn("tear down a warm network attachment", "error", err)
	}
}

// stopWarm stops keeping a warm attachment and tears down the one there
// is; Close calls it.
func (m *Manager) stopWarm() {
	w := &m.warm
	w.mu.Lock()
	w.wanted = false
	if w.cancel != nil {
		w.cancel()
	}
	w.mu.Unlock()
	w.wg.Wait()
	w.mu.Lock()
	r := w.ready
	w.ready = nil
	w.mu.Unlock()
	if r != nil {
		m.dropWarm(r)
	}
}
