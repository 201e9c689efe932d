// Package memory is an in-memory registry.Store: a map under a mutex with a
// token index. It keeps nothing across restarts and is meant for tests.
package memory

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// Store implements registry.Store in memory.
type Store struct {
	mu      sync.RWMutex
	byNode  map[string]registry.Registration
	values  map[string]string
	blocked map[[2]string]registry.BlockedToken
	held    []heldPush
	leases  map[string]time.Time // owner: when its lease runs out
	moved   int                  // names the pushes MoveHeldPushes moved
	// imported holds the nodes PutImported wrote, with their times.
	imported map[string]time.Time
}

var _ registry.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{byNode: map[string]registry.Registration{}, values: map[string]string{}, blocked: map[[2]string]registry.BlockedToken{},
		leases: map[string]time.Time{}, imported: map[string]time.Time{}}
}

func (s *Store) Get(ctx context.Context, node string) (registry.Registration, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.byNode[node]
	if !ok {
		return registry.Registration{}, registry.ErrNotFound
	}
	return r, nil
}

func (s *Store) GetByDeviceKey(ctx context.Context, key string) (registry.Registration, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if key != "" {
		for _, r := range s.byNode {
			if r.DeviceKey == key {
				return r, nil
			}
		}
	}
	return registry.Registration{}, registry.ErrNotFound
}

func (s *Store) Register(ctx context.Context, node string, decide registry.Decide) (registry.Registration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, found := s.byNode[node]
	r, err := decide(old, found)
	if err != nil {
		return registry.Registration{}, err
	}
	if r.Node != node {
		return registry.Registration{}, fmt.Errorf("register: decided on node %q for node %q", r.Node, node)
	}
	if r.DeviceKey != "" {
		for n, o := range s.byNode {
			if n != node && o.DeviceKey == r.DeviceKey {
				return registry.Registration{}, fmt.Errorf("register: device key held by another node: %w", registry.ErrConflict)
			}
		}
	}
	s.byNode[node] = r
	return r, nil
}

func (s *Store) Delete(ctx context.Context, node, typ string) (registry.Registration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byNode[node]
	if !ok || r.Type != typ {
		return registry.Registration{}, registry.ErrNotFound
	}
	delete(s.byNode, node)
	return r, nil
}

func (s *Store) DeleteRead(ctx context.Context, read registry.Registration) (registry.Registration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byNode[read.Node]
	if !ok || !registry.SameAsRead(r, read) {
		return registry.Registration{}, registry.ErrNotFound
	}
	delete(s.byNode, read.Node)
	return r, nil
}

func (s *Store) DeleteToken(ctx context.Context, typ, token string, before time.Time) ([]registry.Registration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var removed []registry.Registration
	for n, r := range s.byNode {
		if r.Type == typ && r.Token == token && r.LastRegistered().Before(before) {
			removed = append(removed, r)
			delete(s.byNode, n)
		}
	}
	return removed, nil
}

func (s *Store) DeleteIdle(ctx context.Context, before time.Time, typ, after string, limit int) ([]registry.Registration, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var window []string
	for n := range s.byNode {
		if n > after {
			window = append(window, n)
		}
	}
	// The first limit in node order, of any type, as the databases look
	// at them.
	sort.Strings(window)
	next := ""
	if len(window) >= limit {
		window = window[:limit]
		if limit > 0 {
			next = window[limit-1]
		}
	}
	var removed []registry.Registration
	for _, n := range window {
		if r := s.byNode[n]; (typ == "" || r.Type == typ) && r.IdleSince(before) {
			removed = append(removed, r)
			delete(s.byNode, n)
		}
	}
	return removed, next, nil
}

func (s *Store) UpdatePushStatus(ctx context.Context, statuses []registry.PushStatus) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range statuses {
		r, ok := s.byNode[st.Node]
		if !ok {
			continue
		}
		// The latest outcome wins, whatever order batches arrive in.
		if st.Success {
			if st.At.After(r.LastSuccessfulPush) {
				r.LastSuccessfulPush = st.At
			}
		} else if st.At.After(r.LastPushError) {
			r.LastPushError = st.At
			r.LastErrorReason = st.Reason
		}
		s.byNode[st.Node] = r
	}
	return nil
}

func (s *Store) Nodes(ctx context.Context, limit int) ([]string, error) {
	s.mu.RLock()
	nodes := make([]string, 0, len(s.byNode))
	for n := range s.byNode {
		nodes = append(nodes, n)
	}
	s.mu.RUnlock()
	sort.Strings(nodes)
	if len(nodes) > limit {
		nodes = nodes[:limit]
	}
	return nodes, nil
}

func (s *Store) Count(ctx context.Context) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byNode), nil
}

func (s *Store) CountMatching(ctx context.Context, typ, domain string) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, r := range s.byNode {
		if (typ == "" || r.Type == typ) && (domain == "" || r.Domain == domain) {
			n++
		}
	}
	return n, nil
}

func (s *Store) BlockToken(ctx context.Context, b registry.BlockedToken) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blocked[[2]string{b.Type, b.Token}] = b
	return nil
}

func (s *Store) GetBlockedToken(ctx context.Context, typ, token string) (registry.BlockedToken, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, ok := s.blocked[[2]string{typ, token}]
	if !ok {
		return registry.BlockedToken{Type: typ, Token: token}, registry.ErrNotFound
	}
	return b, nil
}

func (s *Store) UnblockToken(ctx context.Context, typ, token string, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]string{typ, token}
	if b, ok := s.blocked[k]; ok && !b.Until.After(until) {
		delete(s.blocked, k)
	}
	return nil
}

func (s *Store) CountDomain(ctx context.Context, domain string, limit int) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, r := range s.byNode {
		if n >= limit {
			break
		}
		if r.Domain == domain && domain != "" {
			n++
		}
	}
	return n, nil
}

// heldPush is a held push with the server that keeps it; "" once
// released.
type heldPush struct {
	owner string
	registry.HeldPush
}

func (s *Store) KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.leases[owner]; renew && !ok {
		return registry.ErrLeaseLost
	}
	s.leases[owner] = time.Now().Add(lease)
	gone := map[string]bool{}
	for _, d := range del {
		gone[d] = true
	}
	for _, p := range put {
		gone[p.Device] = true
	}
	s.held = slices.DeleteFunc(s.held, func(h heldPush) bool { return h.owner == owner && gone[h.Device] })
	now := time.Now()
	for _, p := range put {
		p.Push = bytes.Clone(p.Push)
		if p.Age != 0 {
			p.FailedAt = now.Add(-p.Age).Round(0)
		}
		s.held = append(s.held, heldPush{owner, p})
	}
	return nil
}

func (s *Store) ReleasePushes(ctx context.Context, owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.release(owner)
	return nil
}

// release gives owner's pushes to anyone; s.mu is held.
func (s *Store) release(owner string) {
	delete(s.leases, owner)
	for i := range s.held {
		if s.held[i].owner == owner {
			s.held[i].owner = ""
		}
	}
}

// releaseLapsed gives the pushes of every lease run out by now to
// whoever takes them; s.mu is held.
func (s *Store) releaseLapsed(now time.Time) {
	for owner, until := range s.leases {
		if until.Before(now) {
			s.release(owner)
		}
	}
}

func (s *Store) TakeHeldPushes(ctx context.Context, limit int) ([]registry.HeldPush, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLapsed(time.Now())
	slices.SortStableFunc(s.held, func(a, b heldPush) int { return a.FailedAt.Compare(b.FailedAt) })
	var out []registry.HeldPush
	s.held = slices.DeleteFunc(s.held, func(h heldPush) bool {
		if h.owner != "" || len(out) >= limit {
			return false
		}
		out = append(out, withAge(h.HeldPush))
		return true
	})
	return out, nil
}

func (s *Store) MoveHeldPushes(ctx context.Context, owner string, lease time.Duration, renew bool, limit int) ([]registry.HeldPush, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.releaseLapsed(now)
	if _, ok := s.leases[owner]; renew && !ok {
		return nil, registry.ErrLeaseLost
	}
	s.leases[owner] = now.Add(lease)
	slices.SortStableFunc(s.held, func(a, b heldPush) int { return a.FailedAt.Compare(b.FailedAt) })
	var out []registry.HeldPush
	for i := range s.held {
		if s.held[i].owner != "" || len(out) >= limit {
			continue
		}
		s.moved++
		s.held[i].owner, s.held[i].Device = owner, fmt.Sprintf("moved/%d", s.moved)
		out = append(out, withAge(s.held[i].HeldPush))
	}
	return out, nil
}

// withAge is p with its age by this store's clock.
func withAge(p registry.HeldPush) registry.HeldPush {
	p.Age = max(time.Since(p.FailedAt), 1)
	return p
}

func (s *Store) ReturnHeldPushes(ctx context.Context, owner string, devices []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.held {
		if s.held[i].owner == owner && slices.Contains(devices, s.held[i].Device) {
			s.held[i].owner = ""
		}
	}
	return nil
}

func (s *Store) PurgeBlockedTokens(ctx context.Context, before time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, b := range s.blocked {
		if b.Until.Before(before) {
			delete(s.blocked, k)
			n++
		}
	}
	return n, nil
}

func (s *Store) TrimBlockedTokens(ctx context.Context, keep int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.blocked) <= keep {
		return 0, nil
	}
	keys := make([][2]string, 0, len(s.blocked))
	for k := range s.blocked {
		keys = append(keys, k)
	}
	// Soonest-ending first, ties in (type, token) order.
	slices.SortFunc(keys, func(a, b [2]string) int {
		if c := s.blocked[a].Until.Compare(s.blocked[b].Until); c != 0 {
			return c
		}
		return slices.Compare(a[:], b[:])
	})
	n := len(keys) - max(keep, 0)
	for _, k := range keys[:n] {
		delete(s.blocked, k)
	}
	return n, nil
}

func (s *Store) List(ctx context.Context, after string, limit int) ([]registry.Registration, error) {
	return s.list(after, limit, func(registry.Registration) bool { return true })
}

func (s *Store) ListDomain(ctx context.Context, domain, after string, limit int) ([]registry.Registration, error) {
	return s.list(after, limit, func(r registry.Registration) bool { return domain != "" && r.Domain == domain })
}

// list returns up to limit registrations past after that match, in node
// order.
func (s *Store) list(after string, limit int, match func(registry.Registration) bool) ([]registry.Registration, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var nodes []string
	for n, r := range s.byNode {
		if n > after && match(r) {
			nodes = append(nodes, n)
		}
	}
	sort.Strings(nodes)
	out := make([]registry.Registration, 0, min(limit, len(nodes)))
	for _, n := range nodes[:min(limit, len(nodes))] {
		out = append(out, s.byNode[n])
	}
	return out, nil
}

func (s *Store) CountByType(ctx context.Context) (map[string]int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]int{}
	for _, r := range s.byNode {
		out[r.Type]++
	}
	return out, nil
}

func (s *Store) Put(ctx context.Context, rs []registry.Registration) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putLocked(rs)
}

func (s *Store) PutRead(ctx context.Context, rs, read []registry.Registration) (int, []string, error) {
	if len(read) != len(rs) {
		return 0, nil, fmt.Errorf("put: %d registrations, %d as read", len(rs), len(read))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	write, changed := s.stillAsReadLocked(rs, read)
	added, err := s.putLocked(write)
	if err != nil {
		return 0, nil, err
	}
	return added, changed, nil
}

// stillAsReadLocked returns those of rs whose node is still as read
// (see PutRead), and the nodes of the others; s.mu is held.
func (s *Store) stillAsReadLocked(rs, read []registry.Registration) (write []registry.Registration, changed []string) {
	for i, r := range rs {
		now, found := s.byNode[r.Node]
		if !registry.StillAsRead(now, found, read[i]) {
			changed = append(changed, r.Node)
			continue
		}
		write = append(write, r)
	}
	return write, changed
}

// putLocked is Put, with s.mu held.
func (s *Store) putLocked(rs []registry.Registration) (int, error) {
	// Judged on what the batch leaves: each node's row as the batch
	// writes it, or as stored.
	final := map[string]string{} // node: its device key afterwards
	for n, old := range s.byNode {
		final[n] = old.DeviceKey
	}
	for _, r := range rs {
		final[r.Node] = r.DeviceKey
	}
	for _, r := range rs {
		if r.DeviceKey == "" || final[r.Node] != r.DeviceKey {
			continue
		}
		for n, k := range final {
			if k == r.DeviceKey && n != r.Node {
				return 0, fmt.Errorf("put %s: %w: its device key is node %s's", r.Node, registry.ErrConflict, n)
			}
		}
	}
	added := 0
	for _, r := range rs {
		if _, ok := s.byNode[r.Node]; !ok {
			added++
		}
		s.byNode[r.Node] = r
	}
	return added, nil
}

func (s *Store) PutImported(ctx context.Context, rs []registry.Registration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.putLocked(rs); err != nil {
		return err
	}
	for _, r := range rs {
		s.imported[r.Node] = r.LastRegistered()
	}
	return nil
}

func (s *Store) PutImportedRead(ctx context.Context, rs, read []registry.Registration) ([]string, error) {
	if len(read) != len(rs) {
		return nil, fmt.Errorf("put: %d registrations, %d as read", len(rs), len(read))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	write, changed := s.stillAsReadLocked(rs, read)
	if _, err := s.putLocked(write); err != nil {
		return nil, err
	}
	for _, r := range write {
		s.imported[r.Node] = r.LastRegistered()
	}
	return changed, nil
}

func (s *Store) ImportedAt(ctx context.Context, node string) (time.Time, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.imported[node]
	if !ok {
		return time.Time{}, registry.ErrNotFound
	}
	return t, nil
}

func (s *Store) ImportedNodes(ctx context.Context, after string, limit int) ([]registry.ImportedNode, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []registry.ImportedNode
	for n, t := range s.imported {
		if n > after {
			out = append(out, registry.ImportedNode{Node: n, Registered: t})
		}
	}
	slices.SortFunc(out, func(a, b registry.ImportedNode) int { return strings.Compare(a.Node, b.Node) })
	return out[:min(limit, len(out))], nil
}

func (s *Store) PutImportedNodes(ctx context.Context, ns []registry.ImportedNode) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range ns {
		if t, ok := s.imported[n.Node]; !ok || n.Registered.After(t) {
			s.imported[n.Node] = n.Registered
		}
	}
	return nil
}

func (s *Store) InstanceValue(ctx context.Context, name string, gen func() (string, error)) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.values[name]; ok {
		return v, nil
	}
	v, err := gen()
	if err != nil {
		return "", err
	}
	s.values[name] = v
	return v, nil
}

func (s *Store) Close() error { return nil }
