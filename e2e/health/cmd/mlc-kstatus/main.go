// mlc-kstatus reads one Kubernetes object as JSON on stdin and prints its kstatus verdict, computed by
// the real library Flux and kpt use (sigs.k8s.io/cli-utils/pkg/kstatus/status, version pinned in
// ../../go.mod), as one JSON line: {"status":"InProgress|Current|Failed|Terminating|NotFound|Unknown","message":"..."}.
//
// The object is decoded as apimachinery decodes what the API server sends (integers become int64),
// which is what status.Compute sees inside Flux's status poller.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: mlc-kstatus < object.json")
		os.Exit(2)
	}
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(in); err != nil {
		fail("decoding the object: %v", err)
	}
	res, err := status.Compute(u)
	if err != nil {
		fail("status.Compute: %v", err)
	}
	out, _ := json.Marshal(map[string]string{"status": res.Status.String(), "message": res.Message})
	fmt.Println(string(out))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mlc-kstatus: "+format+"\n", args...)
	os.Exit(1)
}
