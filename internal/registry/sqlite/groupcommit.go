package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// maxBatch bounds the registrations committed in one transaction, so one
// commit never holds the write lock for long.
const maxBatch = 512

// errClosed answers registrations after Close.
var errClosed = errors.New("registry closed")

// Registrations are group-committed: one writer goroutine takes every
// Register call waiting at that moment and stores them in one transaction,
// so concurrent registrations share one commit (and one WAL sync) instead of
// queueing for one each. A caller is answered only after the transaction
// holding its row committed. A row that its decide function or the device
// key refuses is left out and answered with that error alone; any other
// failure (a statement's or the commit's) rolls the batch back and the
// writer stores its registrations again one transaction each, so one bad
// row never fails the others.
type groupCommit struct {
	mu     sync.RWMutex // held for reading while sending on queue
	closed bool
	queue  chan *regRequest
	done   chan struct{} // closed when the writer has exited
	hooks  testHooks
}

type regRequest struct {
	ctx    context.Context
	node   string
	decide registry.Decide
	answer chan regAnswer // buffered: the writer never waits for a caller
	r      registry.Registration
	err    error
}

type regAnswer struct {
	r   registry.Registration
	err error
}

// testHooks let tests see and shape batches; nil in production.
type testHooks struct {
	queued     func()               // a request is in the queue
	batchStart func(first string)   // the writer holds the first request of a batch
	committed  func(nodes []string) // a batch transaction committed
}

func (s *Store) startWriter() {
	s.gc.queue = make(chan *regRequest, maxBatch)
	s.gc.done = make(chan struct{})
	go s.writer()
}

// stopWriter lets the writer finish what is queued, then stops it.
func (s *Store) stopWriter() {
	s.gc.mu.Lock()
	if s.gc.closed {
		s.gc.mu.Unlock()
		return
	}
	s.gc.closed = true
	close(s.gc.queue) // no sender is left: they send holding the read lock
	s.gc.mu.Unlock()
	<-s.gc.done
}

func (s *Store) Register(ctx context.Context, node string, decide registry.Decide) (registry.Registration, error) {
	req := &regRequest{ctx: ctx, node: node, decide: decide, answer: make(chan regAnswer, 1)}
	s.gc.mu.RLock()
	if s.gc.closed {
		s.gc.mu.RUnlock()
		return registry.Registration{}, fmt.Errorf("register: %w", errClosed)
	}
	select {
	case s.gc.queue <- req:
	case <-ctx.Done():
		s.gc.mu.RUnlock()
		return registry.Registration{}, fmt.Errorf("register: %w", ctx.Err())
	}
	s.gc.mu.RUnlock()
	if h := s.gc.hooks.queued; h != nil {
		h()
	}
	select {
	case a := <-req.answer:
		return a.r, a.err
	case <-ctx.Done():
		// The writer skips a request whose context ended before its turn;
		// after that, like any request cut off after it was sent, the
		// registration may or may not have been stored.
		return registry.Registration{}, fmt.Errorf("register: %w", ctx.Err())
	}
}

func (s *Store) writer() {
	defer close(s.gc.done)
	batch := make([]*regRequest, 0, maxBatch)
	for first := range s.gc.queue {
		if h := s.gc.hooks.batchStart; h != nil {
			h(first.node)
		}
		batch = append(batch[:0], first)
		// Take whoever queued up behind the first, up to maxBatch.
	collect:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-s.gc.queue:
				if !ok {
					break collect
				}
				batch = append(batch, r)
			default:
				break collect
			}
		}
		if err := s.commitBatch(batch); err != nil {
			for _, r := range batch {
				s.commitOne(r)
			}
		}
		for i := range batch {
			batch[i] = nil
		}
	}
}

// commitBatch stores the batch in one transaction and answers every
// request once it committed. On an error it answers no one with success
// and returns the error: nothing of the batch was stored.
func (s *Store) commitBatch(batch []*regRequest) error {
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
		req.r, req.err = registry.Registration{}, nil
		if err := req.ctx.Err(); err != nil {
			req.err = fmt.Errorf("register: %w", err)
			continue
		}
		var dbErr error
		req.r, req.err, dbErr = st.register(ctx, req.node, req.decide)
		if dbErr != nil {
			return dbErr
		}
		if req.err == nil {
			live++
		}
	}
	if live > 0 {
		if err := tx.Commit(); err != nil {
			return err
		}
		if h := s.gc.hooks.committed; h != nil {
			nodes := make([]string, 0, live)
			for _, req := range batch {
				if req.err == nil {
					nodes = append(nodes, req.node)
				}
			}
			h(nodes)
		}
	}
	for _, req := range batch {
		req.answer <- regAnswer{req.r, req.err}
	}
	return nil
}

// commitOne stores one request in its own transaction and answers it.
func (s *Store) commitOne(req *regRequest) {
	r, err := s.registerAlone(req.ctx, req.node, req.decide)
	req.answer <- regAnswer{r, err}
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
	if err := tx.Commit(); err != nil {
		return registry.Registration{}, fmt.Errorf("register: %w", err)
	}
	return r, nil
}

// regStmts are the registration statements, prepared once on the write
// connection.
type regStmts struct {
	get, holder, upsert *sql.Stmt
}

func (p regStmts) in(ctx context.Context, tx *sql.Tx) txStmts {
	return txStmts{get: tx.StmtContext(ctx, p.get), holder: tx.StmtContext(ctx, p.holder), upsert: tx.StmtContext(ctx, p.upsert)}
}

func (p regStmts) close() {
	for _, st := range []*sql.Stmt{p.get, p.holder, p.upsert} {
		if st != nil {
			st.Close()
		}
	}
}

type txStmts struct{ get, holder, upsert *sql.Stmt }

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
			return registry.Registration{}, fmt.Errorf("register %s: device key held by another node: %w", node, registry.ErrConflict), nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return registry.Registration{}, nil, err
		}
	}
	if _, err := t.upsert.ExecContext(ctx, r.Node, r.Type, r.Token, r.Secret, r.Registered.UnixNano(), nanos(r.Renewed),
		nanos(r.LastSuccessfulPush), nanos(r.LastPushError), r.LastErrorReason, r.Domain, nullString(r.DeviceKey), r.Owner, r.Account); err != nil {
		return registry.Registration{}, nil, err
	}
	return r, nil, nil
}

const (
	sqlGet    = `SELECT ` + columns + ` FROM registrations WHERE node = ?`
	sqlHolder = `SELECT node FROM registrations WHERE device_key = ? AND node <> ?`
	sqlUpsert = `INSERT INTO registrations (` + columns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (node) DO UPDATE SET type = excluded.type, token = excluded.token, secret = excluded.secret,
			registered = excluded.registered, renewed = excluded.renewed,
			last_successful_push = excluded.last_successful_push, last_push_error = excluded.last_push_error,
			last_error_reason = excluded.last_error_reason, domain = excluded.domain,
			device_key = excluded.device_key, owner = excluded.owner, account = excluded.account`
)

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
