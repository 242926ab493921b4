package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/shim/logfile"
)

// logBatch bounds the entries in one LogsResponse.
const logBatch = 256

// followPoll is how often a following Logs call looks for new output. The
// shim writes the file; polling its size is simpler than inotify across
// rotations and costs nothing measurable at this rate.
const followPoll = 100 * time.Millisecond

// Logs reads the container's log files (rotated ones first), applies
// since/until/stream filters and tail, and with follow keeps reading the
// live file (across rotations) until the task has exited and the file is
// drained, or the client goes away.
func (s *tasksService) Logs(req *berthv1.LogsRequest, stream berthv1.TasksService_LogsServer) error {
	ctx := stream.Context()
	c, err := s.container(ctx, req.GetContainerId())
	if err != nil {
		return err
	}
	path := c.GetLogPath()
	if path == "" {
		path = s.a.logPath(namespaces.FromContext(ctx), c.Id)
	}
	maxFiles := s.a.cfg.Logs.MaxFiles
	if n := int(c.GetSpec().GetLog().GetMaxFiles()); n > maxFiles {
		maxFiles = n
	}
	if maxFiles < 1 {
		maxFiles = 1
	}
	wantOut, wantErr := req.GetStdout(), req.GetStderr()
	if !wantOut && !wantErr {
		wantOut, wantErr = true, true
	}
	var since, until time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		until = req.GetUntil().AsTime()
	}
	keep := func(r logfile.Record) bool {
		if r.Stream == logfile.Stdout && !wantOut || r.Stream == logfile.Stderr && !wantErr {
			return false
		}
		if !since.IsZero() && r.Time.Before(since) {
			return false
		}
		return until.IsZero() || !r.Time.After(until)
	}
	entry := func(r logfile.Record) *berthv1.LogEntry {
		st := berthv1.Stream_STREAM_STDOUT
		if r.Stream == logfile.Stderr {
			st = berthv1.Stream_STREAM_STDERR
		}
		data := r.Content
		if !r.Partial {
			data = append(data, '\n')
		}
		return &berthv1.LogEntry{Time: timestamppb.New(r.Time), Stream: st, Data: data, Partial: r.Partial}
	}

	// The backlog: every file, oldest first. tail counts lines (an F
	// record ends a line), so a kept tail never starts mid-line.
	var backlog []logfile.Record
	var live *os.File
	var offset int64
	for _, p := range logfile.Files(path, maxFiles) {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read log of %s: %w", c.Id, err)
		}
		n, err := logfile.ReadAll(f, func(r logfile.Record) error {
			if keep(r) {
				backlog = append(backlog, r)
			}
			return nil
		})
		if p == path {
			live, offset = f, n
		} else {
			f.Close()
		}
		if err != nil {
			if live != nil {
				live.Close()
			}
			return fmt.Errorf("read log of %s: %w", c.Id, err)
		}
	}
	if live != nil {
		defer func() { live.Close() }()
	}
	if tail := req.GetTail(); tail > 0 {
		lines := int64(0)
		i := len(backlog)
		for i > 0 {
			if !backlog[i-1].Partial {
				if lines == tail {
					break
				}
				lines++
			}
			i--
		}
		backlog = backlog[i:]
	}
	var batch []*berthv1.LogEntry
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := stream.Send(&berthv1.LogsResponse{Entries: batch})
		batch = nil
		return err
	}
	for _, r := range backlog {
		batch = append(batch, entry(r))
		if len(batch) == logBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if !req.GetFollow() {
		return nil
	}
	ns := namespaces.FromContext(ctx)
	for {
		running := false
		if _, err := s.a.runtime.Get(ns, c.Id); err == nil {
			if cur, err := s.a.db.Containers().Get(ctx, c.Id); err == nil {
				st := cur.GetStatus().GetState()
				running = st == berthv1.ContainerState_CONTAINER_STATE_RUNNING || st == berthv1.ContainerState_CONTAINER_STATE_PAUSED ||
					st == berthv1.ContainerState_CONTAINER_STATE_CREATED
			}
		}
		// A rotation replaced the live file: finish the old one, then
		// switch to the new one from its start.
		rotated := false
		if fi, err := os.Stat(path); err == nil && live != nil {
			if lfi, err := live.Stat(); err == nil && !os.SameFile(fi, lfi) {
				rotated = true
			}
		}
		if live == nil {
			if f, err := os.Open(path); err == nil {
				live, offset = f, 0
			}
		}
		if live != nil {
			if _, err := live.Seek(offset, io.SeekStart); err == nil {
				n, _ := logfile.ReadAll(live, func(r logfile.Record) error {
					if keep(r) {
						batch = append(batch, entry(r))
					}
					return nil
				})
				offset += n
			}
			if err := flush(); err != nil {
				return err
			}
			if rotated {
				live.Close()
				live, offset = nil, 0
				continue
			}
		}
		if !running {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followPoll):
		}
	}
}
