// mlc-argo-health runs an Argo CD resource health Lua script on one Kubernetes object, the way Argo CD
// runs the scripts of `resource.customizations.health.<group>_<kind>` in argocd-cm, and prints the
// verdict as one JSON line: {"status":"Healthy|Progressing|Degraded|Suspended|Missing|Unknown","message":"..."}.
//
//	mlc-argo-health [--use-open-libs] SCRIPT.lua < object.json
//
// Reproduced from Argo CD v3.5.1 (github.com/argoproj/argo-cd, tag v3.5.1, commit 109ca7ca71):
//   - util/lua/lua.go, VM.runLuaWithResourceActionParameters: the LState (gopher-lua v1.1.2, as
//     pinned in Argo CD's go.mod) is created with SkipOpenLibs unless the override sets useOpenLibs
//     (argocd-cm `resource.customizations.useOpenLibs.<group>_<kind>`, false by default, so
//     --use-open-libs is off by default); then only package, base, table and the "safe" os subset
//     (oslib_safe.go) are opened, each through CallByParam with the library name, the safe os loader
//     is preloaded for require("os"), a 1 s context deadline is set, `actionParams` is an empty
//     table, `obj` is the object converted by decodeValue, and the script runs with DoString.
//     Run errors lose their Lua stack trace.
//   - util/lua/lua.go, decodeValue: JSON null becomes nil (the key is absent in the table), an empty
//     array an empty table, json.Number a string, numbers (int64 after apimachinery's decoding)
//     Lua numbers.
//   - util/lua/lua.go, VM.ExecuteHealthLua: the returned value is encoded with layeh.com/gopher-json
//     and unmarshalled into {status, message}; an empty table (encoded as []) or nil gives an empty
//     status; a status outside the six codes gives Unknown "Lua returned an invalid health status";
//     any other return type is an error.
//   - gitops-engine/pkg/health/health.go, GetResourceHealth: an object with a deletionTimestamp (and no
//     Argo CD hook finalizer) is Progressing "Pending deletion" without running the script.
//
// A Lua error (or any error Argo CD would show as Unknown with its message) exits 1 with the message
// on stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	luajson "layeh.com/gopher-json"
)

// healthStatus is gitops-engine's health.HealthStatus.
type healthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

const (
	incorrectReturnType = "expect %s output from Lua script, not %s"
	invalidHealthStatus = "Lua returned an invalid health status"
	hookFinalizer       = "argocd.argoproj.io/hook-finalizer"
)

func main() {
	args := os.Args[1:]
	useOpenLibs := false
	if len(args) > 0 && args[0] == "--use-open-libs" {
		useOpenLibs, args = true, args[1:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: mlc-argo-health [--use-open-libs] SCRIPT.lua < object.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(args[0])
	if err != nil {
		fail("%v", err)
	}
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(in); err != nil {
		fail("decoding the object: %v", err)
	}
	hs, err := resourceHealth(obj, string(script), useOpenLibs)
	if err != nil {
		fail("%v", err)
	}
	out, _ := json.Marshal(map[string]string{"status": hs.Status, "message": hs.Message})
	fmt.Println(string(out))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mlc-argo-health: "+format+"\n", args...)
	os.Exit(1)
}

// resourceHealth is gitops-engine's GetResourceHealth with the Lua override as the health override.
func resourceHealth(obj *unstructured.Unstructured, script string, useOpenLibs bool) (*healthStatus, error) {
	if obj.GetDeletionTimestamp() != nil && !hasHookFinalizer(obj) {
		return &healthStatus{Status: "Progressing", Message: "Pending deletion"}, nil
	}
	return executeHealthLua(obj, script, useOpenLibs)
}

func hasHookFinalizer(obj *unstructured.Unstructured) bool {
	for _, f := range obj.GetFinalizers() {
		if f == hookFinalizer {
			return true
		}
	}
	return false
}

// runLua is VM.runLuaWithResourceActionParameters with no action parameters.
func runLua(obj *unstructured.Unstructured, script string, useOpenLibs bool) (*lua.LState, error) {
	l := lua.NewState(lua.Options{
		SkipOpenLibs: !useOpenLibs,
	})
	// As in Argo CD, the state is closed before the caller reads the returned value: Close frees
	// the call-frame stack, and the value is read from the registry, which stays.
	defer l.Close()
	for _, pair := range []struct {
		n string
		f lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		// load our 'safe' version of the OS library
		{lua.OsLibName, OpenSafeOs},
	} {
		if err := l.CallByParam(lua.P{
			Fn:      l.NewFunction(pair.f),
			NRet:    0,
			Protect: true,
		}, lua.LString(pair.n)); err != nil {
			panic(err)
		}
	}
	// preload our 'safe' version of the OS library. Allows the 'local os = require("os")' to work
	l.PreloadModule(lua.OsLibName, SafeOsLoader)

	ctx, cancel := context.WithTimeout(context.Background(), 1*time.Second)
	defer cancel()
	l.SetContext(ctx)

	l.SetGlobal("actionParams", l.CreateTable(0, 0))
	l.SetGlobal("obj", decodeValue(l, obj.Object))
	err := l.DoString(script)

	// Remove the default lua stack trace from execution errors since these
	// errors will make it back to the user
	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) {
		if apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = ""
			err = apiErr
		}
	}
	return l, err
}

// executeHealthLua is VM.ExecuteHealthLua.
func executeHealthLua(obj *unstructured.Unstructured, script string, useOpenLibs bool) (*healthStatus, error) {
	l, err := runLua(obj, script, useOpenLibs)
	if err != nil {
		return nil, err
	}
	returnValue := l.Get(-1)
	if returnValue.Type() == lua.LTTable {
		jsonBytes, err := luajson.Encode(returnValue)
		if err != nil {
			return nil, err
		}
		hs := &healthStatus{}
		err = json.Unmarshal(jsonBytes, hs)
		if err != nil {
			// Validate if the error is caused by an empty object
			typeError := &json.UnmarshalTypeError{Value: "array", Type: reflect.TypeFor[*healthStatus]()}
			if errors.As(err, &typeError) {
				return &healthStatus{}, nil
			}
			return nil, err
		}
		if !isValidHealthStatusCode(hs.Status) {
			return &healthStatus{Status: "Unknown", Message: invalidHealthStatus}, nil
		}
		return hs, nil
	} else if returnValue.Type() == lua.LTNil {
		return &healthStatus{}, nil
	}
	return nil, fmt.Errorf(incorrectReturnType, "table", returnValue.Type().String())
}

func isValidHealthStatusCode(s string) bool {
	switch s {
	case "Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing":
		return true
	}
	return false
}

// decodeValue is Argo CD's decodeValue (util/lua/lua.go), itself taken from layeh.com/gopher-json
// with int, int32 and int64 added.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case int:
		return lua.LNumber(converted)
	case int32:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case []any:
		arr := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(converted))
		for key, item := range converted {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	case nil:
		return lua.LNil
	}

	return lua.LNil
}
