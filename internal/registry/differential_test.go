// The stores are tested here against each other and against a model of
// what registry.go's doc comments promise: TestDifferentialStores applies
// one seeded random sequence of operations to the memory, SQLite and
// PostgreSQL stores and to the model, compares every answer, reopens the
// stores now and then and at the end, and compares their whole contents.
// storetest checks each promise on a case written for it; this finds the
// cases nobody wrote, such as a Put whose page hands a device key from one
// of its nodes to another.
//
// The defaults run fixed seeds, the same every run. A longer search:
//
//	go test ./internal/registry -run TestDifferentialStores -registry.seeds=2000 -registry.steps=400 -registry.random
//
// A failure names its seed and the operations that led to it; run that
// seed alone with -registry.first=SEED -registry.seeds=1 (and the same
// -registry.steps).
package registry_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

var (
	seeds  = flag.Int("registry.seeds", 4, "TestDifferentialStores: how many seeds to run")
	first  = flag.Uint64("registry.first", 0, "TestDifferentialStores: the first seed")
	steps  = flag.Int("registry.steps", 200, "TestDifferentialStores: operations per seed")
	random = flag.Bool("registry.random", false, "TestDifferentialStores: start from a seed of the clock's, not -registry.first")
)

var pg = pgtest.New()

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

func TestDifferentialStores(t *testing.T) {
	from := *first
	if *random {
		from = uint64(time.Now().UnixNano())
		t.Logf("first seed %d", from)
	}
	failed := 0
	for seed := from; seed < from+uint64(*seeds) && failed < 3; seed++ {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			r := newRun(t, seed)
			if d := r.play(*steps); d != "" {
				failed++
				t.Errorf("seed %d, after %d operations: %s\nthe last operations:\n  %s", seed, len(r.log), d,
					strings.Join(r.log[max(0, len(r.log)-20):], "\n  "))
			}
		})
	}
}

// model is what the doc comments promise a store holds.
type model struct {
	regs     map[string]registry.Registration
	blocked  map[[2]string]registry.BlockedToken // by type and token
	imported map[string]time.Time
	held     []heldPush
	leases   map[string]bool // owners whose lease lasts (no test runs for the hour a lease is)
}

// heldPush is a held push as the model knows it. A push MoveHeldPushes
// moved has a Device each store names its own way, so the model calls
// it "moved:" and its payload, and each store maps that to its name.
type heldPush struct {
	owner, device string // owner "" for a push that no lease holds
	at            time.Time
	push          string
}

func (h heldPush) String() string { return h.device + ":" + h.push + "@" + fmtTime(h.at) }

func (m *model) register(node string, decide registry.Decide) (registry.Registration, error) {
	old, found := m.regs[node]
	r, err := decide(old, found)
	if err != nil {
		return registry.Registration{}, err
	}
	if r.DeviceKey != "" {
		for n, o := range m.regs {
			if n != node && o.DeviceKey == r.DeviceKey {
				return registry.Registration{}, registry.ErrConflict
			}
		}
	}
	m.regs[node] = r
	return r, nil
}

// put is Put: each registration replaces its node's, and the whole fails,
// changing nothing, where what it leaves has one device key held by two
// nodes.
func (m *model) put(rs []registry.Registration, imported bool) bool {
	next := maps.Clone(m.regs)
	for _, r := range rs {
		next[r.Node] = r
	}
	holders := map[string]bool{}
	for _, r := range next {
		if r.DeviceKey == "" {
			continue
		}
		if holders[r.DeviceKey] {
			return false
		}
		holders[r.DeviceKey] = true
	}
	m.regs = next
	if imported {
		for _, r := range rs {
			m.imported[r.Node] = r.LastRegistered()
		}
	}
	return true
}

// free returns the indexes in m.held of the pushes no lease holds, the
// oldest first, at most limit.
func (m *model) free(limit int) []int {
	slices.SortStableFunc(m.held, func(a, b heldPush) int { return a.at.Compare(b.at) })
	var out []int
	for i, h := range m.held {
		if h.owner == "" && len(out) < limit {
			out = append(out, i)
		}
	}
	return out
}

// store is one of the stores under test.
type store struct {
	name   string
	s      registry.Store
	reopen func() registry.Store
	moved  map[string]string // a moved push's payload: the Device this store gave it
}

// run is one seed's sequence. Everything in it follows from the seed,
// times included, so that a seed replays the same operations.
type run struct {
	t      *testing.T
	rng    *rand.Rand
	stores []*store
	m      model
	clock  time.Time
	n      int // secrets and pushes made, to make each distinct
	log    []string
}

var ctx = context.Background()

// epoch is where a run's clock starts.
var epoch = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func newRun(t *testing.T, seed uint64) *run {
	path := filepath.Join(t.TempDir(), "registry.db")
	dsn := pg.DB(t)
	openSQLite := func() registry.Store {
		s, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	openPG := func() registry.Store {
		s, err := postgres.Open(ctx, dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	mem := memory.New()
	r := &run{
		t:   t,
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		stores: []*store{
			{name: "memory", s: mem, reopen: func() registry.Store { return mem }},
			{name: "sqlite", s: openSQLite(), reopen: openSQLite},
			{name: "postgres", s: openPG(), reopen: openPG},
		},
		m: model{regs: map[string]registry.Registration{}, blocked: map[[2]string]registry.BlockedToken{},
			imported: map[string]time.Time{}, leases: map[string]bool{}},
		clock: epoch,
	}
	for _, s := range r.stores {
		s.moved = map[string]string{}
	}
	t.Cleanup(func() {
		for _, s := range r.stores {
			s.s.Close()
		}
	})
	return r
}

// ops are the operations a run picks from, by weight. A third of them
// are on held pushes, which nothing else touches.
var ops = []struct {
	weight int
	op     func(*run) string
}{
	{4, (*run).register},
	{1, (*run).registerOwnerChecked},
	{1, (*run).delete},
	{1, (*run).deleteToken},
	{1, (*run).deleteIdle},
	{2, (*run).updatePushStatus},
	{1, (*run).blockToken},
	{1, (*run).unblockToken},
	{1, (*run).blockedTokens},
	{2, (*run).put},
	{1, (*run).putImportedNodes},
	{1, (*run).lookups},
	{1, (*run).listings},
	{1, (*run).reopen},
	{1, (*run).contents},
	{2, (*run).keepPushes},
	{2, (*run).releasePushes},
	{2, (*run).takeHeldPushes},
	{2, (*run).moveHeldPushes},
	{2, (*run).returnHeldPushes},
}

// play runs n operations and then compares the contents after a reopen.
// It returns the first difference, or "".
func (r *run) play(n int) string {
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	for range n {
		w := r.rng.IntN(total)
		i := 0
		for ; w >= ops[i].weight; i++ {
			w -= ops[i].weight
		}
		if d := ops[i].op(r); d != "" {
			return d
		}
	}
	if d := r.reopen(); d != "" {
		return d
	}
	return r.contents()
}

// check logs op and compares what each store answers (got's answer) with
// what the model wants.
func (r *run) check(op, want string, got func(*store) string) string {
	r.log = append(r.log, op)
	for _, s := range r.stores {
		if g := got(s); g != want {
			return fmt.Sprintf("%s: %s answered\n   %s\nthe model wants\n   %s", op, s.name, g, want)
		}
	}
	return ""
}

func (r *run) pick(xs ...string) string { return xs[r.rng.IntN(len(xs))] }
func (r *run) node() string             { return "n" + strconv.Itoa(r.rng.IntN(6)) }
func (r *run) typ() string              { return r.pick("a", "b") }
func (r *run) token() string            { return "t" + strconv.Itoa(r.rng.IntN(4)) }
func (r *run) key() string              { return r.pick("", "", "k0", "k1", "k2") }
func (r *run) domain() string           { return r.pick("", "d0", "d1") }

// tick moves the clock on and returns it.
func (r *run) tick() time.Time {
	r.clock = r.clock.Add(time.Duration(1+r.rng.IntN(3)) * time.Millisecond)
	return r.clock
}

// near returns a time before, at or just after the clock, so that
// comparisons with recent times go either way.
func (r *run) near() time.Time {
	return r.clock.Add(time.Duration(r.rng.IntN(9)-6) * time.Millisecond)
}

// registration returns one as a request would make it: registered now,
// never renewed or pushed to.
func (r *run) registration() registry.Registration {
	r.n++
	return registry.Registration{Node: r.node(), Type: r.typ(), Token: r.token(), Secret: "s" + strconv.Itoa(r.n),
		Registered: r.tick(), Domain: r.domain(), DeviceKey: r.key(), Owner: r.pick("", "o1", "o2"), Account: r.pick("", "acc")}
}

// record returns a registration as another registry would hold it, with
// its history.
func (r *run) record() registry.Registration {
	reg := r.registration()
	if r.rng.IntN(3) == 0 {
		reg.Renewed = reg.Registered.Add(time.Duration(r.rng.IntN(5)) * time.Millisecond)
	}
	if r.rng.IntN(3) == 0 {
		reg.LastSuccessfulPush = r.near()
	}
	if r.rng.IntN(3) == 0 {
		reg.LastPushError, reg.LastErrorReason = r.near(), r.pick("x", "y")
	}
	return reg
}

// errRefused is what an owner-checked decide refuses with.
var errRefused = errors.New("refused by decide")

func (r *run) register() string {
	reg := r.registration()
	return r.registerWith("Register(Renew "+fmtReg(reg)+")", reg.Node, registry.Renew(reg))
}

// registerOwnerChecked registers as XMPP registrations do: another
// account's node is refused.
func (r *run) registerOwnerChecked() string {
	reg := r.registration()
	decide := func(old registry.Registration, found bool) (registry.Registration, error) {
		if found && old.Owner != reg.Owner {
			return registry.Registration{}, errRefused
		}
		return registry.Renew(reg)(old, found)
	}
	return r.registerWith("Register(owner-checked "+fmtReg(reg)+")", reg.Node, decide)
}

func (r *run) registerWith(op, node string, decide registry.Decide) string {
	want, err := r.m.register(node, decide)
	return r.check(op, answer(fmtReg(want), err), func(s *store) string {
		got, err := s.s.Register(ctx, node, decide)
		return answer(fmtReg(got), err)
	})
}

func (r *run) delete() string {
	node, typ := r.node(), r.typ()
	want, werr := registry.Registration{}, registry.ErrNotFound
	if old, ok := r.m.regs[node]; ok && old.Type == typ {
		want, werr = old, nil
		delete(r.m.regs, node)
	}
	return r.check(fmt.Sprintf("Delete(%s, %s)", node, typ), answer(fmtReg(want), werr), func(s *store) string {
		got, err := s.s.Delete(ctx, node, typ)
		return answer(fmtReg(got), err)
	})
}

func (r *run) deleteToken() string {
	typ, token, before := r.typ(), r.token(), r.near()
	var want []registry.Registration
	for n, reg := range r.m.regs {
		if reg.Type == typ && reg.Token == token && reg.LastRegistered().Before(before) {
			want = append(want, reg)
			delete(r.m.regs, n)
		}
	}
	return r.check(fmt.Sprintf("DeleteToken(%s, %s, %s)", typ, token, fmtTime(before)), answer(fmtSet(want), nil), func(s *store) string {
		got, err := s.s.DeleteToken(ctx, typ, token, before)
		return answer(fmtSet(got), err)
	})
}

func (r *run) deleteIdle() string {
	before, typ, after, limit := r.near(), r.pick("", "a", "b"), r.pick("", "n1", "n3"), 1+r.rng.IntN(3)
	// The window is the first limit nodes after after, of any type.
	window, next := r.m.nodes(after), ""
	if len(window) >= limit {
		window, next = window[:limit], window[limit-1]
	}
	var idle []registry.Registration
	for _, n := range window {
		if reg := r.m.regs[n]; (typ == "" || reg.Type == typ) && reg.IdleSince(before) {
			idle = append(idle, reg)
			delete(r.m.regs, n)
		}
	}
	return r.check(fmt.Sprintf("DeleteIdle(%s, %q, %q, %d)", fmtTime(before), typ, after, limit), answer(fmtSet(idle)+" next "+next, nil), func(s *store) string {
		got, next, err := s.s.DeleteIdle(ctx, before, typ, after, limit)
		return answer(fmtSet(got)+" next "+next, err)
	})
}

// nodes returns the model's nodes after the one given, in order.
func (m *model) nodes(after string) []string {
	var ns []string
	for n := range m.regs {
		if n > after {
			ns = append(ns, n)
		}
	}
	sort.Strings(ns)
	return ns
}

func (r *run) updatePushStatus() string {
	var sts []registry.PushStatus
	var logged []string
	for range 1 + r.rng.IntN(4) {
		st := registry.PushStatus{Node: r.node(), At: r.near(), Success: r.rng.IntN(2) == 0}
		if !st.Success {
			st.Reason = r.pick("BadDeviceToken", "timeout", "x")
		}
		sts = append(sts, st)
		logged = append(logged, fmt.Sprintf("{%s %s %v %q}", st.Node, fmtTime(st.At), st.Success, st.Reason))
	}
	for _, st := range sts {
		reg, ok := r.m.regs[st.Node]
		switch {
		case !ok:
			continue
		case st.Success && st.At.After(reg.LastSuccessfulPush):
			reg.LastSuccessfulPush = st.At
		case !st.Success && st.At.After(reg.LastPushError):
			reg.LastPushError, reg.LastErrorReason = st.At, st.Reason
		}
		r.m.regs[st.Node] = reg
	}
	return r.check(fmt.Sprintf("UpdatePushStatus(%s)", logged), "ok", func(s *store) string {
		return errClass(s.s.UpdatePushStatus(ctx, sts))
	})
}

func (r *run) blockToken() string {
	b := registry.BlockedToken{Type: r.typ(), Token: r.token(), Since: r.near(), Until: r.near().Add(5 * time.Millisecond), Reason: r.pick("Unregistered", "")}
	r.m.blocked[[2]string{b.Type, b.Token}] = b
	return r.check(fmt.Sprintf("BlockToken(%s %s %s)", b.Type, b.Token, fmtBlocked(b)), "ok", func(s *store) string { return errClass(s.s.BlockToken(ctx, b)) })
}

func (r *run) unblockToken() string {
	typ, token, until := r.typ(), r.token(), r.near()
	k := [2]string{typ, token}
	if b, ok := r.m.blocked[k]; ok && !b.Until.After(until) {
		delete(r.m.blocked, k)
	}
	return r.check(fmt.Sprintf("UnblockToken(%s, %s, %s)", typ, token, fmtTime(until)), "ok", func(s *store) string {
		return errClass(s.s.UnblockToken(ctx, typ, token, until))
	})
}

// blockedTokens looks a blocked token up and, a third of the time,
// purges the expired ones.
func (r *run) blockedTokens() string {
	typ, token := r.typ(), r.token()
	want := answer("", registry.ErrNotFound)
	if b, ok := r.m.blocked[[2]string{typ, token}]; ok {
		want = answer(fmtBlocked(b), nil)
	}
	if d := r.check(fmt.Sprintf("GetBlockedToken(%s, %s)", typ, token), want, func(s *store) string {
		b, err := s.s.GetBlockedToken(ctx, typ, token)
		return answer(fmtBlocked(b), err)
	}); d != "" || r.rng.IntN(3) != 0 {
		return d
	}
	before := r.near()
	n := 0
	for k, b := range r.m.blocked {
		if b.Until.Before(before) {
			delete(r.m.blocked, k)
			n++
		}
	}
	return r.check(fmt.Sprintf("PurgeBlockedTokens(%s)", fmtTime(before)), answer(strconv.Itoa(n), nil), func(s *store) string {
		got, err := s.s.PurgeBlockedTokens(ctx, before)
		return answer(strconv.Itoa(got), err)
	})
}

// put writes a page as an import or a copy does: a few records, never
// one node twice.
func (r *run) put() string {
	var rs []registry.Registration
	for range 1 + r.rng.IntN(3) {
		reg := r.record()
		if !slices.ContainsFunc(rs, func(o registry.Registration) bool { return o.Node == reg.Node }) {
			rs = append(rs, reg)
		}
	}
	imported := r.rng.IntN(2) == 0
	op, put := "Put", func(s registry.Store, ctx context.Context, rs []registry.Registration) error {
		_, err := s.Put(ctx, rs)
		return err
	}
	if imported {
		op, put = "PutImported", registry.Store.PutImported
	}
	want := "ok"
	if !r.m.put(rs, imported) {
		want = "failed"
	}
	// Put's doc names no error to fail with, so any will do.
	return r.check(fmt.Sprintf("%s(%s)", op, fmtRegs(rs)), want, func(s *store) string {
		if put(s.s, ctx, rs) != nil {
			return "failed"
		}
		return "ok"
	})
}

func (r *run) putImportedNodes() string {
	var ns []registry.ImportedNode
	var logged []string
	for range 1 + r.rng.IntN(3) {
		n := registry.ImportedNode{Node: r.node(), Registered: r.near()}
		ns = append(ns, n)
		logged = append(logged, n.Node+"@"+fmtTime(n.Registered))
	}
	for _, n := range ns {
		if at, ok := r.m.imported[n.Node]; !ok || n.Registered.After(at) {
			r.m.imported[n.Node] = n.Registered
		}
	}
	return r.check(fmt.Sprintf("PutImportedNodes(%s)", logged), "ok", func(s *store) string { return errClass(s.s.PutImportedNodes(ctx, ns)) })
}

// pushTargeter is what the push path reads a registration with where the
// store offers it.
type pushTargeter interface {
	GetPushTarget(ctx context.Context, node string) (registry.PushTarget, error)
}

func (r *run) lookups() string {
	node := r.node()
	reg, found := r.m.regs[node]
	want, target := answer("", registry.ErrNotFound), answer("", registry.ErrNotFound)
	if found {
		want, target = answer(fmtReg(reg), nil), answer(fmt.Sprintf("%+v", reg.Target()), nil)
	}
	if d := r.check("Get("+node+")", want, func(s *store) string {
		got, err := s.s.Get(ctx, node)
		return answer(fmtReg(got), err)
	}); d != "" {
		return d
	}
	if d := r.check("GetPushTarget("+node+")", target, func(s *store) string {
		pt, ok := s.s.(pushTargeter)
		if !ok {
			return target
		}
		got, err := pt.GetPushTarget(ctx, node)
		return answer(fmt.Sprintf("%+v", got), err)
	}); d != "" {
		return d
	}
	key := r.key()
	want = answer("", registry.ErrNotFound)
	for _, reg := range r.m.regs {
		if key != "" && reg.DeviceKey == key {
			want = answer(fmtReg(reg), nil)
		}
	}
	return r.check("GetByDeviceKey("+key+")", want, func(s *store) string {
		got, err := s.s.GetByDeviceKey(ctx, key)
		return answer(fmtReg(got), err)
	})
}

func (r *run) listings() string {
	after, limit := r.pick("", "n0", "n2", "n5"), r.rng.IntN(4)
	ns := r.m.nodes(after)
	ns = ns[:min(limit, len(ns))]
	var want []registry.Registration
	for _, n := range ns {
		want = append(want, r.m.regs[n])
	}
	if d := r.check(fmt.Sprintf("List(%q, %d)", after, limit), answer(fmtRegs(want), nil), func(s *store) string {
		got, err := s.s.List(ctx, after, limit)
		return answer(fmtRegs(got), err)
	}); d != "" {
		return d
	}
	all := r.m.nodes("")
	if d := r.check(fmt.Sprintf("Nodes(%d)", limit), answer(fmt.Sprint(all[:min(limit, len(all))]), nil), func(s *store) string {
		got, err := s.s.Nodes(ctx, limit)
		return answer(fmt.Sprint(got), err)
	}); d != "" {
		return d
	}
	byType := map[string]int{}
	for _, reg := range r.m.regs {
		byType[reg.Type]++
	}
	if d := r.check("CountByType, Count", fmt.Sprintf("%v ok %d ok", byType, len(r.m.regs)), func(s *store) string {
		got, err := s.s.CountByType(ctx)
		n, err2 := s.s.Count(ctx)
		return fmt.Sprintf("%v %s %d %s", got, errClass(err), n, errClass(err2))
	}); d != "" {
		return d
	}
	domain, limit := r.domain(), r.rng.IntN(4)
	n := 0
	for _, reg := range r.m.regs {
		if domain != "" && reg.Domain == domain {
			n++
		}
	}
	if d := r.check(fmt.Sprintf("CountDomain(%q, %d)", domain, limit), answer(strconv.Itoa(min(n, limit)), nil), func(s *store) string {
		got, err := s.s.CountDomain(ctx, domain, limit)
		return answer(strconv.Itoa(got), err)
	}); d != "" {
		return d
	}
	node := r.node()
	want2 := answer("", registry.ErrNotFound)
	if at, ok := r.m.imported[node]; ok {
		want2 = answer(fmtTime(at), nil)
	}
	return r.check("ImportedAt("+node+")", want2, func(s *store) string {
		got, err := s.s.ImportedAt(ctx, node)
		return answer(fmtTime(got), err)
	})
}

// reopen closes and opens the stores again (the memory store stays as
// it is): what they answer afterwards is what they had written.
func (r *run) reopen() string {
	r.log = append(r.log, "reopen")
	for _, s := range r.stores {
		if s.name != "memory" {
			if err := s.s.Close(); err != nil {
				return fmt.Sprintf("%s: close: %v", s.name, err)
			}
		}
		s.s = s.reopen()
	}
	return ""
}

// contents compares every registration and every imported node.
func (r *run) contents() string {
	var regs []registry.Registration
	for _, n := range r.m.nodes("") {
		regs = append(regs, r.m.regs[n])
	}
	var imported []string
	for n, at := range r.m.imported {
		imported = append(imported, n+"@"+fmtTime(at))
	}
	sort.Strings(imported)
	want := fmt.Sprintf("%s ok imported %v ok", fmtRegs(regs), imported)
	return r.check("contents", want, func(s *store) string {
		regs, err := s.s.List(ctx, "", 1000)
		ns, err2 := s.s.ImportedNodes(ctx, "", 1000)
		var imported []string
		for _, n := range ns {
			imported = append(imported, n.Node+"@"+fmtTime(n.Registered))
		}
		return fmt.Sprintf("%s %s imported %v %s", fmtRegs(regs), errClass(err), imported, errClass(err2))
	})
}

func (r *run) keepPushes() string {
	owner, renew := r.pick("o1", "o2"), r.rng.IntN(3) == 0
	var put []registry.HeldPush
	var kept []heldPush
	for range r.rng.IntN(3) {
		r.n++
		device := r.pick("d1", "d2", "d3")
		if slices.ContainsFunc(put, func(p registry.HeldPush) bool { return p.Device == device }) {
			continue // one push per device and owner
		}
		h := heldPush{owner: owner, device: device, at: r.tick(), push: "p" + strconv.Itoa(r.n)}
		put = append(put, registry.HeldPush{Device: device, FailedAt: h.at, Push: []byte(h.push)})
		kept = append(kept, h)
	}
	var del []string
	for range r.rng.IntN(2) {
		del = append(del, r.pick("d1", "d2", "d3"))
	}
	for _, h := range r.m.held {
		if h.owner == owner && strings.HasPrefix(h.device, "moved:") && r.rng.IntN(2) == 0 {
			del = append(del, h.device)
		}
	}
	want := r.m.lease(owner, renew)
	if want == "ok" {
		gone := map[string]bool{}
		for _, d := range del {
			gone[d] = true
		}
		for _, p := range put {
			gone[p.Device] = true
		}
		r.m.held = slices.DeleteFunc(r.m.held, func(h heldPush) bool { return h.owner == owner && gone[h.device] })
		r.m.held = append(r.m.held, kept...)
	}
	return r.check(fmt.Sprintf("KeepPushes(%s, renew %v, put %v, del %v)", owner, renew, kept, del), want, func(s *store) string {
		return leaseClass(s.s.KeepPushes(ctx, owner, time.Hour, renew, put, s.devices(del)))
	})
}

// lease starts or, with renew, renews owner's lease as KeepPushes and
// MoveHeldPushes do, and returns what they answer.
func (m *model) lease(owner string, renew bool) string {
	if renew && !m.leases[owner] {
		return "lease lost"
	}
	m.leases[owner] = true
	return "ok"
}

// devices names the model's devices as s does.
func (s *store) devices(ds []string) []string {
	var out []string
	for _, d := range ds {
		if p, ok := strings.CutPrefix(d, "moved:"); ok {
			d = s.moved[p]
		}
		out = append(out, d)
	}
	return out
}

func (r *run) releasePushes() string {
	owner := r.pick("o1", "o2", "o3")
	delete(r.m.leases, owner)
	for i := range r.m.held {
		if r.m.held[i].owner == owner {
			r.m.held[i].owner = ""
		}
	}
	return r.check("ReleasePushes("+owner+")", "ok", func(s *store) string { return errClass(s.s.ReleasePushes(ctx, owner)) })
}

func (r *run) takeHeldPushes() string {
	limit := r.rng.IntN(3)
	var want []string
	free := r.m.free(limit)
	for _, i := range free {
		want = append(want, r.m.held[i].push+"@"+fmtTime(r.m.held[i].at))
	}
	for _, i := range slices.Backward(free) {
		r.m.held = slices.Delete(r.m.held, i, i+1)
	}
	return r.check(fmt.Sprintf("TakeHeldPushes(%d)", limit), answer(fmt.Sprint(want), nil), func(s *store) string {
		got, err := s.s.TakeHeldPushes(ctx, limit)
		return answer(fmtHeld(got), err)
	})
}

func (r *run) moveHeldPushes() string {
	owner, renew, limit := r.pick("o1", "o2"), r.rng.IntN(3) == 0, r.rng.IntN(3)
	var want []string
	lease := r.m.lease(owner, renew)
	if lease == "ok" {
		for _, i := range r.m.free(limit) {
			h := &r.m.held[i]
			h.owner, h.device = owner, "moved:"+h.push
			want = append(want, h.push+"@"+fmtTime(h.at))
		}
	}
	return r.check(fmt.Sprintf("MoveHeldPushes(%s, renew %v, %d)", owner, renew, limit), fmt.Sprint(want)+" "+lease, func(s *store) string {
		got, err := s.s.(registry.HeldMover).MoveHeldPushes(ctx, owner, time.Hour, renew, limit)
		for _, p := range got {
			s.moved[string(p.Push)] = p.Device
		}
		return fmtHeld(got) + " " + leaseClass(err)
	})
}

func (r *run) returnHeldPushes() string {
	owner := r.pick("o1", "o2")
	var ret []string
	for i, h := range r.m.held {
		if h.owner == owner && strings.HasPrefix(h.device, "moved:") && r.rng.IntN(2) == 0 {
			ret = append(ret, h.device)
			r.m.held[i].owner = ""
		}
	}
	return r.check(fmt.Sprintf("ReturnHeldPushes(%s, %v)", owner, ret), "ok", func(s *store) string {
		return errClass(s.s.(registry.HeldMover).ReturnHeldPushes(ctx, owner, s.devices(ret)))
	})
}

// Answers are compared as text, times as their exact distance from the
// start of a run's clock, so that a difference in either shows.

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Sub(epoch).String()
}

func fmtReg(r registry.Registration) string {
	return fmt.Sprintf("{%s %s %s %s reg=%s ren=%s ok=%s err=%s %q dom=%s key=%s own=%s acc=%s}", r.Node, r.Type, r.Token, r.Secret,
		fmtTime(r.Registered), fmtTime(r.Renewed), fmtTime(r.LastSuccessfulPush), fmtTime(r.LastPushError), r.LastErrorReason,
		r.Domain, r.DeviceKey, r.Owner, r.Account)
}

// fmtRegs formats registrations in the order given.
func fmtRegs(rs []registry.Registration) string {
	var out []string
	for _, r := range rs {
		out = append(out, fmtReg(r))
	}
	return "[" + strings.Join(out, " ") + "]"
}

// fmtSet formats registrations returned in no particular order.
func fmtSet(rs []registry.Registration) string {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b registry.Registration) int { return strings.Compare(a.Node, b.Node) })
	return fmtRegs(rs)
}

func fmtBlocked(b registry.BlockedToken) string {
	return fmt.Sprintf("%s %s %q", fmtTime(b.Since), fmtTime(b.Until), b.Reason)
}

func fmtHeld(ps []registry.HeldPush) string {
	var out []string
	for _, p := range ps {
		out = append(out, string(p.Push)+"@"+fmtTime(p.FailedAt))
	}
	return fmt.Sprint(out)
}

// answer formats a result with its error's class; the result only when
// there was no error.
func answer(result string, err error) string {
	if err != nil {
		return errClass(err)
	}
	return result + " ok"
}

func errClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, registry.ErrNotFound):
		return "not found"
	case errors.Is(err, registry.ErrConflict):
		return "conflict"
	case errors.Is(err, errRefused):
		return "refused"
	default:
		return "error: " + err.Error()
	}
}

func leaseClass(err error) string {
	if errors.Is(err, registry.ErrLeaseLost) {
		return "lease lost"
	}
	return errClass(err)
}
