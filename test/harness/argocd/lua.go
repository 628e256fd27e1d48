// Package argocd runs Keyward's Argo CD resource customizations
// (config/argocd/resource_customizations: health checks and the rotate
// action) in gopher-lua, the Lua VM Argo CD embeds, with the libraries Argo
// CD opens for them, so that tests can check them on real objects. Only tests
// use it.
package argocd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	lua "github.com/yuin/gopher-lua"
)

// Dir is the resource customizations' directory of a kind under root, e.g.
// <root>/config/argocd/resource_customizations/keyward.dev/AccessKey.
func Dir(root, kind string) string {
	return filepath.Join(root, "config", "argocd", "resource_customizations", "keyward.dev", kind)
}

// HealthStatus is what a health.lua returns.
type HealthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// ActionDiscovery is one action a discovery.lua offers.
type ActionDiscovery struct {
	Name     string `json:"name"`
	Disabled bool   `json:"disabled"`
}

// newVM opens what Argo CD's Lua VM opens (base, table, string, math) and
// offers os only through require("os"), as Argo CD does.
func newVM(obj map[string]any) (*lua.LState, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.fn))
		L.Push(lua.LString(lib.name))
		if err := L.PCall(1, 0, nil); err != nil {
			L.Close()
			return nil, err
		}
	}
	L.PreloadModule("os", func(L *lua.LState) int {
		L.Push(L.NewFunction(lua.OpenOs))
		L.Push(lua.LString(lua.OsLibName))
		L.Call(1, 1)
		mod := L.GetGlobal(lua.OsLibName)
		L.SetGlobal(lua.OsLibName, lua.LNil)
		L.Push(mod)
		return 1
	})
	L.SetGlobal("obj", toLua(L, obj))
	return L, nil
}

func run(scriptPath string, obj map[string]any) (any, error) {
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return nil, err
	}
	L, err := newVM(obj)
	if err != nil {
		return nil, err
	}
	defer L.Close()
	if err := L.DoString(string(script)); err != nil {
		return nil, fmt.Errorf("%s: %w", scriptPath, err)
	}
	ret := L.Get(-1)
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("%s returned %s, not a table", scriptPath, ret.Type())
	}
	return fromLua(ret), nil
}

func convert(in, out any) error {
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, out)
}

// Health runs the kind's health.lua on obj.
func Health(root, kind string, obj map[string]any) (HealthStatus, error) {
	var hs HealthStatus
	out, err := run(filepath.Join(Dir(root, kind), "health.lua"), obj)
	if err != nil {
		return hs, err
	}
	err = convert(out, &hs)
	return hs, err
}

// Discover runs the kind's actions/discovery.lua on obj.
func Discover(root, kind string, obj map[string]any) ([]ActionDiscovery, error) {
	out, err := run(filepath.Join(Dir(root, kind), "actions", "discovery.lua"), obj)
	if err != nil {
		return nil, err
	}
	m, ok := out.(map[string]any)
	if !ok {
		return nil, errors.New("discovery.lua did not return a table of actions")
	}
	var list []ActionDiscovery
	for name, v := range m {
		a := ActionDiscovery{Name: name}
		if err := convert(v, &a); err != nil {
			return nil, err
		}
		a.Name = name
		list = append(list, a)
	}
	return list, nil
}

// Action runs the kind's actions/<name>/action.lua on obj and returns the
// object Argo CD would patch the live one to.
func Action(root, kind, name string, obj map[string]any) (map[string]any, error) {
	out, err := run(filepath.Join(Dir(root, kind), "actions", name, "action.lua"), obj)
	if err != nil {
		return nil, err
	}
	m, ok := out.(map[string]any)
	if !ok {
		return nil, errors.New("the action did not return an object")
	}
	return m, nil
}

// toLua converts decoded JSON into Lua values (arrays become 1-based tables).
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case json.Number:
		f, _ := v.Float64()
		return lua.LNumber(f)
	case []any:
		t := L.NewTable()
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	case map[string]any:
		t := L.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	}
	panic(fmt.Sprintf("argocd: cannot convert %T to Lua", v))
}

// fromLua converts back: a table whose keys are 1..n is an array.
func fromLua(v lua.LValue) any {
	switch v := v.(type) {
	case *lua.LNilType:
		return nil
	case lua.LBool:
		return bool(v)
	case lua.LString:
		return string(v)
	case lua.LNumber:
		f := float64(v)
		if f == float64(int64(f)) {
			return int64(f)
		}
		return f
	case *lua.LTable:
		if n := v.MaxN(); n > 0 {
			arr := make([]any, 0, n)
			for i := 1; i <= n; i++ {
				arr = append(arr, fromLua(v.RawGetInt(i)))
			}
			return arr
		}
		m := map[string]any{}
		v.ForEach(func(k, e lua.LValue) { m[k.String()] = fromLua(e) })
		return m
	}
	return v.String()
}
