package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// maxBatch bounds the registrations committed in one transaction, so one
// commit never holds the rows' locks for long.
const maxBatch = 512

// errClosed answers registrations after Close.
var errClosed = errors.New("registry closed")

// Registrations are group-committed, as on SQLite: one writer goroutine
// takes every Register call waiting at that moment and stores them in one
// transaction, with one locking read of all their rows, their writes sent
// in one pipeline and one commit (one WAL flush) for all, instead of four
// round trips and a flush each. A caller is answered only after the
// transaction holding its row committed. A row that its decide function
// or a device key held by another node refuses is left out and answered
// with that error alone; any other failure (a statement's, the commit's,
// or another instance creating one of the nodes at the same moment) rolls
// the batch back, and the writer stores its registrations again one
// transaction each through the single path, so one bad row never fails
// the others and a race is settled as it is without batching. One writer
// per instance: a batch waiting on a row another instance holds locked
// holds up this instance's registrations behind it, at most for the lock
// timeout (the statement timeout).
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

// Register reads the node's row locked, decides and writes in one
// transaction, shared with the registrations arriving at the same time.
// Two instances creating the same node at once cannot both insert: the one
// that loses the race starts over and decides again on the winner's row,
// as if they had gone one after the other.
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
		if len(batch) == 1 {
			s.commitOne(first)
		} else if err := s.commitBatch(batch); err != nil {
			for _, r := range batch {
				s.commitOne(r)
			}
		}
		for i := range batch {
			batch[i] = nil
		}
	}
}

// commitOne stores one request through the single path and answers it.
func (s *Store) commitOne(req *regRequest) {
	r, a, err := s.registerAlone(req.ctx, req.node, req.decide)
	if len(a) == 0 {
		req.answer <- regAnswer{r, err}
		return
	}
	// Answered once the other instances dropped what they cached; the
	// writer goes on meanwhile.
	go func() {
		s.bar.waitAll(a, true)
		req.answer <- regAnswer{r, err}
	}()
}

// commitBatch stores the batch in one transaction and answers every
// request once it committed. On an error it answers no one and returns
// the error: nothing of the batch was stored.
func (s *Store) commitBatch(batch []*regRequest) error {
	// The transaction is the writer's, not any caller's: one caller giving
	// up must not roll back the others' rows. The statement timeout bounds
	// it.
	ctx := context.Background()
	nodes := make([]string, 0, len(batch))
	seen := make(map[string]bool, len(batch))
	for _, req := range batch {
		req.r, req.err = registry.Registration{}, nil
		if err := req.ctx.Err(); err != nil {
			req.err = fmt.Errorf("register: %w", err)
			continue
		}
		if !seen[req.node] {
			seen[req.node] = true
			nodes = append(nodes, req.node)
		}
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	others, err := s.bar.name(ctx, tx)
	if err != nil {
		return err
	}
	// The other instances' acks, expected before the commit; released
	// unanswered if the batch fails.
	var acks acks
	defer func() { s.bar.waitAll(acks, false) }()
	// Locked in node order, as UpdatePushStatus locks: no deadlock.
	rows, err := tx.Query(ctx, `SELECT `+columns+` FROM registrations WHERE node = ANY($1) ORDER BY node FOR UPDATE`, nodes)
	if err != nil {
		return err
	}
	cur := make(map[string]registry.Registration, len(nodes))
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			rows.Close()
			return err
		}
		cur[r.Node] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	keys := batchKeys{cur: cur, written: make(map[string]bool, len(nodes))}
	var writes pgx.Batch
	live := 0
	for _, req := range batch {
		if req.err != nil {
			continue
		}
		old, found := cur[req.node]
		r, err := req.decide(old, found)
		if err != nil {
			req.err = err
			continue
		}
		if r.Node != req.node {
			req.err = fmt.Errorf("register: decided on node %q for node %q", r.Node, req.node)
			continue
		}
		if r.DeviceKey != "" {
			held, err := keys.heldByOther(ctx, tx, r.DeviceKey, r.Node)
			if err != nil {
				return err
			}
			if held {
				req.err = fmt.Errorf("register %s: device key held by another node: %w", r.Node, registry.ErrConflict)
				continue
			}
		}
		args := []any{r.Node, r.Type, r.Token, r.Secret, r.Registered, null(r.Renewed), null(r.LastSuccessfulPush),
			null(r.LastPushError), r.LastErrorReason, r.Domain, nullString(r.DeviceKey), r.Owner, r.Account}
		if found {
			writes.Queue(sqlUpdate, args...)
		} else {
			writes.Queue(sqlInsert, args...)
		}
		cur[r.Node] = r
		keys.written[r.Node] = true
		req.r = r
		live++
		acks.expect(&s.bar, r.Node, others)
	}
	if live > 0 {
		res := tx.SendBatch(ctx, &writes)
		for range live {
			tag, err := res.Exec()
			if err != nil {
				res.Close()
				return err
			}
			if tag.RowsAffected() == 0 {
				// Another instance created the node after our read: the
				// single path settles it.
				res.Close()
				return errRaced
			}
		}
		if err := res.Close(); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
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
	if len(acks) == 0 {
		for _, req := range batch {
			req.answer <- regAnswer{req.r, req.err}
		}
		return nil
	}
	// The callers are answered once the other instances dropped what
	// they cached; the writer goes on with the next batch meanwhile.
	pending, reqs := acks, slices.Clone(batch) // the writer reuses batch
	acks = nil
	go func() {
		s.bar.waitAll(pending, true)
		for _, req := range reqs {
			req.answer <- regAnswer{req.r, req.err}
		}
	}()
	return nil
}

// batchKeys answers whether a device key is held by another node, as the
// unique index would see it after the batch's earlier rows: rows written
// in the batch count as decided, the others as stored.
type batchKeys struct {
	cur     map[string]registry.Registration // rows as the batch leaves them so far
	written map[string]bool                  // nodes the batch writes
}

func (k batchKeys) heldByOther(ctx context.Context, tx pgx.Tx, key, node string) (bool, error) {
	for n := range k.written {
		if n != node && k.cur[n].DeviceKey == key {
			return true, nil
		}
	}
	rows, err := tx.Query(ctx, `SELECT node FROM registrations WHERE device_key = $1 AND node <> $2`, key, node)
	if err != nil {
		return false, err
	}
	holders, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, err
	}
	for _, h := range holders {
		// A node the batch rewrote holds what the batch gave it.
		if !k.written[h] || k.cur[h].DeviceKey == key {
			return true, nil
		}
	}
	return false, nil
}

const (
	sqlUpdate = `UPDATE registrations SET type = $2, token = $3, secret = $4, registered = $5,
		renewed = $6, last_successful_push = $7, last_push_error = $8, last_error_reason = $9,
		domain = $10, device_key = $11, owner = $12, account = $13 WHERE node = $1`
	sqlInsert = `INSERT INTO registrations (` + columns + `)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (node) DO NOTHING`
)
