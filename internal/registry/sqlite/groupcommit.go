package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/groupcommit"
)

// Register is group-committed (see groupcommit): a batch is one
// transaction, one commit and one WAL sync. A row that its decide function
// or the device key refuses is left out and answered with that error
// alone; any other failure (a statement's or the commit's) rolls the batch
// back and each registration is stored again in a transaction of its own,
// so one bad row never fails the others. A batch whose transaction cannot
// begin (the write lock held by another process past the busy timeout)
// is answered that error at once, every registration of it.
func (s *Store) Register(ctx context.Context, node string, decide registry.Decide) (registry.Registration, error) {
	return s.gc.Register(ctx, node, decide)
}

// committer is the Store as its group-commit queue sees it.
type committer struct{ s *Store }

func (c committer) CommitOne(req *groupcommit.Request)             { c.s.commitOne(req) }
func (c committer) CommitBatch(batch []*groupcommit.Request) error { return c.s.commitBatch(batch) }

// commitBatch stores the batch in one transaction and answers every
// request once it committed. On an error it answers no one with success
// and returns the error: nothing of the batch was stored.
func (s *Store) commitBatch(batch []*groupcommit.Request) error {
	// The transaction is the writer's, not any caller's: one caller giving
	// up must not roll back the others' rows.
	ctx := context.Background()
	live := 0
	began := false
	var log *os.File // the log to sync before answering, if owed
	// unsynced fails a batch committed after a failed sync of the log
	// that is not known to be on disk.
	var unsynced error
	err := s.withRegWriter(ctx, func(w *regWriter) error {
		if err := w.begin(); err != nil {
			return err
		}
		began = true
		defer w.rollbackOpen()
		for _, req := range batch {
			req.R, req.Err = registry.Registration{}, nil
			if err := req.Ctx.Err(); err != nil {
				req.Err = fmt.Errorf("register: %w", err)
				continue
			}
			var dbErr error
			req.R, req.Err, dbErr = w.register(req.Node, req.Decide)
			if dbErr != nil {
				return dbErr
			}
			if req.Err == nil {
				live++
			}
		}
		if live == 0 {
			return nil
		}
		if err := s.unmoved(); err != nil {
			return err
		}
		if s.logs.failed.Load() {
			var err error
			unsynced, err = s.commitAfterFailedSync(w)
			return err
		}
		var err error
		log, err = w.commitDeferred(s.logPages.Load())
		return err
	})
	if err != nil && !began {
		// No row was tried: the write lock is held elsewhere past the
		// busy timeout (another process writing the file), or the
		// connection cannot write at all. Each registration alone would
		// wait as long again, one after the other, and every one queued
		// behind them with it: a batch of 64 stalled registrations for
		// 65 busy timeouts, more than ten minutes. They are answered the
		// batch's error now; their clients try again.
		for _, req := range batch {
			req.R, req.Err = registry.Registration{}, fmt.Errorf("register: %w", err)
			req.Answer()
		}
		return nil
	}
	if err != nil {
		return err
	}
	if live > 0 {
		s.gc.Committed(batch)
	}
	if unsynced != nil {
		for _, req := range batch {
			if req.Err == nil {
				req.R, req.Err = registry.Registration{}, unsynced
			}
		}
	}
	if log != nil {
		s.logs.answerWhenSynced(log, batch)
	} else {
		for _, req := range batch {
			req.Answer()
		}
	}
	if live > 0 {
		s.fitLog(ctx)
	}
	return nil
}

// commitOne stores one request in its own transaction and answers it.
func (s *Store) commitOne(req *groupcommit.Request) {
	r, err := s.registerAlone(req.Ctx, req.Node, req.Decide)
	req.R, req.Err = r, err
	req.Answer()
}

func (s *Store) registerAlone(ctx context.Context, node string, decide registry.Decide) (registry.Registration, error) {
	if err := ctx.Err(); err != nil {
		return registry.Registration{}, fmt.Errorf("register: %w", err)
	}
	var r registry.Registration
	var rowErr, unsynced error
	err := s.withRegWriter(context.Background(), func(w *regWriter) error {
		if err := w.begin(); err != nil {
			return err
		}
		defer w.rollbackOpen()
		var dbErr error
		if r, rowErr, dbErr = w.register(node, decide); dbErr != nil || rowErr != nil {
			return dbErr
		}
		if err := s.unmoved(); err != nil {
			return err
		}
		if s.logs.failed.Load() {
			// A batch failed after a failed sync of the log (its own
			// commit failing too, as on a failing disk): this commit
			// is after the same gap in the log on disk as the batch's
			// would have been, and a power cut would lose it until the
			// log is copied and emptied.
			var err error
			unsynced, err = s.commitAfterFailedSync(w)
			return err
		}
		return w.commit()
	})
	if err != nil {
		return registry.Registration{}, fmt.Errorf("register: %w", err)
	}
	if rowErr != nil {
		return registry.Registration{}, rowErr
	}
	if unsynced != nil {
		return registry.Registration{}, unsynced
	}
	s.fitLog(context.Background())
	return r, nil
}

// withRegWriter runs f with the registration statements ready on the
// writer's connection, which it holds meanwhile. f runs on the writer
// goroutine (or at Open, before it starts): regWriter is not shared.
func (s *Store) withRegWriter(ctx context.Context, f func(*regWriter) error) error {
	conn, err := s.write.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		if err := s.reg.on(dc); err != nil {
			return err
		}
		return f(s.reg)
	})
}

// register is the read, decision and write of one registration inside the
// transaction w has open. rowErr is a refusal of this registration
// (decide's error, ErrConflict), after which nothing of it was written and
// the transaction goes on; dbErr is a failure of the database, after which
// the transaction must be rolled back.
func (w *regWriter) register(node string, decide registry.Decide) (r registry.Registration, rowErr, dbErr error) {
	old, err := w.get(node)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return r, nil, err
	}
	found := err == nil
	r, err = decide(old, found)
	if err != nil {
		return registry.Registration{}, err, nil
	}
	if r.Node != node {
		return registry.Registration{}, fmt.Errorf("register: decided on node %q for node %q", r.Node, node), nil
	}
	if r.DeviceKey != "" {
		held, err := w.held(r.DeviceKey, node)
		if err != nil {
			return registry.Registration{}, nil, err
		}
		if held {
			return registry.Registration{}, fmt.Errorf("register: device key held by another node: %w", registry.ErrConflict), nil
		}
	}
	if err := w.write(r, found); err != nil {
		return registry.Registration{}, nil, err
	}
	// Outcomes change here only when a registration starts afresh (or an
	// import brings its own), not on a new registration or a renewal.
	if !sameStatus(r, old) {
		if err := w.setStatus(r); err != nil {
			return registry.Registration{}, nil, fmt.Errorf("push status: %w", err)
		}
	}
	return r, nil, nil
}

const (
	sqlGet    = selectRegistrations + ` WHERE node = ?`
	sqlHolder = `SELECT node FROM registrations WHERE device_key = ? AND node <> ?`
)

// sameStatus says whether a and b have the same push outcomes.
func sameStatus(a, b registry.Registration) bool {
	return a.LastSuccessfulPush.Equal(b.LastSuccessfulPush) && a.LastPushError.Equal(b.LastPushError) && a.LastErrorReason == b.LastErrorReason
}

// unmoved fails when the registry's file is no longer at its path (removed
// or replaced under the running server): SQLite would go on writing to
// the open file, which no name reaches, and every registration answered
// OK would be gone at the next start.
func (s *Store) unmoved() error {
	if s.file == nil {
		return nil
	}
	st, err := os.Stat(s.path)
	if err == nil && os.SameFile(st, s.file) {
		return nil
	}
	return fmt.Errorf("the registry file %s was removed or replaced while the server had it open; restart the server (%v)", s.path, err)
}
