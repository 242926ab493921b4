package agent

import "sync"

// taskLocks serialise the operations that create or delete a container's
// task (CreateTask, DeleteTask, container removal, the release of an
// exited task), so that two of them never race on one shim: the exit
// handler releasing a task while the user removes the container, or a
// restart creating a task while the old one is being released.
type taskLocks struct {
	mu    sync.Mutex
	locks map[string]*taskLock
}

type taskLock struct {
	mu   sync.Mutex
	refs int
}

// lock takes the lock of container ns/id and returns its release.
func (l *taskLocks) lock(ns, id string) func() {
	key := ns + "/" + id
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*taskLock{}
	}
	tl := l.locks[key]
	if tl == nil {
		tl = &taskLock{}
		l.locks[key] = tl
	}
	tl.refs++
	l.mu.Unlock()
	tl.mu.Lock()
	return func() {
		tl.mu.Unlock()
		l.mu.Lock()
		if tl.refs--; tl.refs == 0 {
			delete(l.locks, key)
		}
		l.mu.Unlock()
	}
}
