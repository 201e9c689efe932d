package sqlite

import (
	"context"
	"database/sql"
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
// so one bad row never fails the others.
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
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	st := s.regStmts.in(ctx, tx)
	live := 0
	for _, req := range batch {
		req.R, req.Err = registry.Registration{}, nil
		if err := req.Ctx.Err(); err != nil {
			req.Err = fmt.Errorf("register: %w", err)
			continue
		}
		var dbErr error
		req.R, req.Err, dbErr = st.register(ctx, req.Node, req.Decide)
		if dbErr != nil {
			return dbErr
		}
		if req.Err == nil {
			live++
		}
	}
	if live > 0 {
		if err := s.unmoved(); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		s.gc.Committed(batch)
	}
	for _, req := range batch {
		req.Answer()
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
	tx, err := s.write.BeginTx(context.Background(), nil)
	if err != nil {
		return registry.Registration{}, fmt.Errorf("register: %w", err)
	}
	defer tx.Rollback()
	r, rowErr, dbErr := s.regStmts.in(context.Background(), tx).register(context.Background(), node, decide)
	if dbErr != nil {
		return registry.Registration{}, fmt.Errorf("register: %w", dbErr)
	}
	if rowErr != nil {
		return registry.Registration{}, rowErr
	}
	if err := s.unmoved(); err != nil {
		return registry.Registration{}, fmt.Errorf("register: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return registry.Registration{}, fmt.Errorf("register: %w", err)
	}
	s.fitLog(context.Background())
	return r, nil
}

// regStmts are the registration statements, prepared once on the write
// connection.
type regStmts struct {
	get, holder, upsert *sql.Stmt
}

func (p regStmts) in(ctx context.Context, tx *sql.Tx) txStmts {
	return txStmts{tx: tx, get: tx.StmtContext(ctx, p.get), holder: tx.StmtContext(ctx, p.holder), upsert: tx.StmtContext(ctx, p.upsert)}
}

func (p regStmts) close() {
	for _, st := range []*sql.Stmt{p.get, p.holder, p.upsert} {
		if st != nil {
			st.Close()
		}
	}
}

type txStmts struct {
	tx                  *sql.Tx
	get, holder, upsert *sql.Stmt
}

// register is the read, decision and write of one registration inside the
// caller's transaction. rowErr is a refusal of this registration (decide's
// error, ErrConflict), after which nothing of it was written and the
// transaction goes on; dbErr is a failure of the database, after which the
// transaction must be rolled back.
func (t txStmts) register(ctx context.Context, node string, decide registry.Decide) (r registry.Registration, rowErr, dbErr error) {
	old, err := scan(t.get.QueryRowContext(ctx, node))
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return r, nil, err
	}
	r, err = decide(old, err == nil)
	if err != nil {
		return registry.Registration{}, err, nil
	}
	if r.Node != node {
		return registry.Registration{}, fmt.Errorf("register: decided on node %q for node %q", r.Node, node), nil
	}
	if r.DeviceKey != "" {
		var holder string
		err := t.holder.QueryRowContext(ctx, r.DeviceKey, node).Scan(&holder)
		if err == nil {
			return registry.Registration{}, fmt.Errorf("register: device key held by another node: %w", registry.ErrConflict), nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return registry.Registration{}, nil, err
		}
	}
	if _, err := t.upsert.ExecContext(ctx, regValues(r)...); err != nil {
		return registry.Registration{}, nil, err
	}
	// Outcomes change here only when a registration starts afresh (or an
	// import brings its own), not on a new registration or a renewal.
	if !sameStatus(r, old) {
		if err := setStatus(ctx, t.tx, r); err != nil {
			return registry.Registration{}, nil, err
		}
	}
	return r, nil, nil
}

const (
	sqlGet    = selectRegistrations + ` WHERE node = ?`
	sqlHolder = `SELECT node FROM registrations WHERE device_key = ? AND node <> ?`
	sqlUpsert = `INSERT INTO registrations (` + regColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (node) DO UPDATE SET type = excluded.type, token = excluded.token, secret = excluded.secret,
			registered = excluded.registered, renewed = excluded.renewed, domain = excluded.domain,
			device_key = excluded.device_key, owner = excluded.owner, account = excluded.account`
)

// sameStatus says whether a and b have the same push outcomes.
func sameStatus(a, b registry.Registration) bool {
	return a.LastSuccessfulPush.Equal(b.LastSuccessfulPush) && a.LastPushError.Equal(b.LastPushError) && a.LastErrorReason == b.LastErrorReason
}

func prepareRegStmts(ctx context.Context, db *sql.DB) (regStmts, error) {
	var p regStmts
	var err error
	if p.get, err = db.PrepareContext(ctx, sqlGet); err != nil {
		return p, err
	}
	if p.holder, err = db.PrepareContext(ctx, sqlHolder); err != nil {
		p.close()
		return regStmts{}, err
	}
	if p.upsert, err = db.PrepareContext(ctx, sqlUpsert); err != nil {
		p.close()
		return regStmts{}, err
	}
	return p, nil
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
