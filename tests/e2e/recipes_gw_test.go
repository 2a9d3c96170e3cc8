package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func postJSON(t *testing.T, s *server, path, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(s.clientURL()+path, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m), "%s: %s", path, b)
	delete(m, "header")
	return resp.StatusCode, m
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestRecipesGateway: the Lock and Election services on the JSON gateway
// (POST /v3/lock/..., /v3/election/...), as etcd v3.7.3 serves them.
func TestRecipesGateway(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	l, err := cli.Grant(testCtx(t), 60)
	require.NoError(t, err)
	id := int64(l.ID)

	code, m := postJSON(t, s, "/v3/lock/lock", fmt.Sprintf(`{"name":%q,"lease":"%d"}`, b64("gl"), id))
	require.Equal(t, http.StatusOK, code, "%v", m)
	require.Equal(t, map[string]any{"key": b64(fmt.Sprintf("gl/%x", id))}, m)
	code, m = postJSON(t, s, "/v3/lock/unlock", fmt.Sprintf(`{"key":%q}`, m["key"]))
	require.Equal(t, http.StatusOK, code, "%v", m)
	require.Empty(t, m)

	code, m = postJSON(t, s, "/v3/election/leader", fmt.Sprintf(`{"name":%q}`, b64("ge")))
	// Compat: etcd's gateway answers 500 with the gRPC status.
	require.Equal(t, http.StatusInternalServerError, code)
	require.Equal(t, map[string]any{"code": float64(2), "message": "election: no leader"}, m)
	noLeaderCode, noLeader := code, m
	code, m = postJSON(t, s, "/v3/election/campaign", fmt.Sprintf(`{"name":%q,"lease":"%d","value":%q}`, b64("ge"), id, b64("v1")))
	require.Equal(t, http.StatusOK, code, "%v", m)
	leader := m["leader"].(map[string]any)
	require.Equal(t, b64(fmt.Sprintf("ge/%x", id)), leader["key"])
	code, m = postJSON(t, s, "/v3/election/leader", fmt.Sprintf(`{"name":%q}`, b64("ge")))
	require.Equal(t, http.StatusOK, code, "%v", m)
	require.Equal(t, b64("v1"), m["kv"].(map[string]any)["value"])
	lk, err := json.Marshal(leader)
	require.NoError(t, err)
	code, m = postJSON(t, s, "/v3/election/resign", fmt.Sprintf(`{"leader":%s}`, lk))
	require.Equal(t, http.StatusOK, code, "%v", m)
	code, m = postJSON(t, s, "/v3/election/leader", fmt.Sprintf(`{"name":%q}`, b64("ge")))
	require.Equal(t, noLeaderCode, code)
	require.Equal(t, noLeader, m)
}
