package config

import (
	"fmt"
	"reflect"
	"strings"
)

// Changes is what differs between two configs, by identity: listeners and
// pools by name, backends by pool and address. A listener or pool is
// changed when any of its keys differs (a pool's backends aside: they are
// counted on their own); a backend when its weight does.
type Changes struct {
	ListenersAdded, ListenersRemoved, ListenersChanged []string
	PoolsAdded, PoolsRemoved, PoolsChanged             []string
	// Backends as "POOL ADDRESS"; those of added and removed pools are
	// not listed.
	BackendsAdded, BackendsRemoved, BackendsChanged []string
	// Tracing is "on" (the block was added), "off" (removed), "changed",
	// or "" (the same).
	Tracing string
}

// Compare lists what changes from prev to next.
func Compare(prev, next *Config) Changes {
	var c Changes
	for _, l := range next.Listeners {
		switch old := prev.Listener(l.Name); {
		case old == nil:
			c.ListenersAdded = append(c.ListenersAdded, l.Name)
		case !reflect.DeepEqual(*old, l):
			c.ListenersChanged = append(c.ListenersChanged, l.Name)
		}
	}
	for _, l := range prev.Listeners {
		if next.Listener(l.Name) == nil {
			c.ListenersRemoved = append(c.ListenersRemoved, l.Name)
		}
	}
	for _, p := range next.Pools {
		old := prev.Pool(p.Name)
		if old == nil {
			c.PoolsAdded = append(c.PoolsAdded, p.Name)
			continue
		}
		a, b := *old, p
		a.Backends, b.Backends = nil, nil
		if !reflect.DeepEqual(a, b) {
			c.PoolsChanged = append(c.PoolsChanged, p.Name)
		}
		for _, be := range p.Backends {
			switch ob := old.Backend(be.Address); {
			case ob == nil:
				c.BackendsAdded = append(c.BackendsAdded, p.Name+" "+be.Address)
			case ob.Weight != be.Weight:
				c.BackendsChanged = append(c.BackendsChanged, p.Name+" "+be.Address)
			}
		}
		for _, be := range old.Backends {
			if p.Backend(be.Address) == nil {
				c.BackendsRemoved = append(c.BackendsRemoved, p.Name+" "+be.Address)
			}
		}
	}
	for _, p := range prev.Pools {
		if next.Pool(p.Name) == nil {
			c.PoolsRemoved = append(c.PoolsRemoved, p.Name)
		}
	}
	switch {
	case prev.Tracing == nil && next.Tracing != nil:
		c.Tracing = "on"
	case prev.Tracing != nil && next.Tracing == nil:
		c.Tracing = "off"
	case prev.Tracing != nil && *prev.Tracing != *next.Tracing:
		c.Tracing = "changed"
	}
	return c
}

// Summary is c on one line, e.g. "listeners: 1 changed (public); backends:
// 1 added (web http://10.0.0.3:8080)", or "no listener, pool or backend
// changed".
func (c Changes) Summary() string {
	var parts []string
	add := func(what string, groups ...[]string) {
		var words []string
		for i, names := range groups {
			if len(names) > 0 {
				words = append(words, fmt.Sprintf("%d %s (%s)", len(names), [...]string{"added", "removed", "changed"}[i], list(names)))
			}
		}
		if len(words) > 0 {
			parts = append(parts, what+": "+strings.Join(words, ", "))
		}
	}
	add("listeners", c.ListenersAdded, c.ListenersRemoved, c.ListenersChanged)
	add("pools", c.PoolsAdded, c.PoolsRemoved, c.PoolsChanged)
	add("backends", c.BackendsAdded, c.BackendsRemoved, c.BackendsChanged)
	if c.Tracing != "" {
		parts = append(parts, "tracing: "+c.Tracing)
	}
	if len(parts) == 0 {
		return "no listener, pool or backend changed"
	}
	return strings.Join(parts, "; ")
}

// list names at most three, then says how many more.
func list(names []string) string {
	if len(names) <= 3 {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:3], ", "), len(names)-3)
}

// Listener returns the listener named name, or nil.
func (c *Config) Listener(name string) *Listener {
	for i := range c.Listeners {
		if c.Listeners[i].Name == name {
			return &c.Listeners[i]
		}
	}
	return nil
}

// Pool returns the pool named name, or nil.
func (c *Config) Pool(name string) *Pool {
	for i := range c.Pools {
		if c.Pools[i].Name == name {
			return &c.Pools[i]
		}
	}
	return nil
}

// Backend returns the backend of p with the given address, or nil.
func (p *Pool) Backend(address string) *Backend {
	for i := range p.Backends {
		if p.Backends[i].Address == address {
			return &p.Backends[i]
		}
	}
	return nil
}
