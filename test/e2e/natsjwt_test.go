package e2e

import (
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/fedsender/fedsender/internal/config"
)

// TestNATSCredentialsFile: fedsender logs in with a credentials file (user
// JWT and seed) to a nats-server in operator mode, and delivers.
func TestNATSCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	operator, _ := nkeys.CreateOperator()
	operatorPub, _ := operator.PublicKey()
	sys, _ := nkeys.CreateAccount()
	sysPub, _ := sys.PublicKey()
	account, _ := nkeys.CreateAccount()
	accountPub, _ := account.PublicKey()
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	userSeed, _ := user.Seed()

	oc := jwt.NewOperatorClaims(operatorPub)
	oc.SystemAccount = sysPub
	operatorJWT := encode(t, oc, operator)
	sysJWT := encode(t, jwt.NewAccountClaims(sysPub), operator)
	ac := jwt.NewAccountClaims(accountPub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accountJWT := encode(t, ac, operator)
	userJWT := encode(t, jwt.NewUserClaims(userPub), account)
	creds, err := jwt.FormatUserConfig(userJWT, userSeed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(dir, "fedsender.creds")
	writeFile(t, credsFile, string(creds))

	path := filepath.Join(dir, "nats-server.conf")
	writeFile(t, path, `listen: "127.0.0.1:-1"
server_name: jwt
jetstream { store_dir: "`+filepath.Join(dir, "js")+`" }
operator: `+operatorJWT+`
system_account: `+sysPub+`
resolver: MEMORY
resolver_preload: {
  `+sysPub+`: `+sysJWT+`
  `+accountPub+`: `+accountJWT+`
}
`)
	ns := startNATSFile(t, path)
	url := "nats://" + ns.Addr().String()

	h := newHarness(t, func(c *config.Config) {
		c.NATS.URL, c.NATS.Credentials = url, credsFile
	})
	h.deliversOne("!creds:origin.test")

	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Error("the operator-mode server let a client in without credentials: the test proves nothing")
	}
}

func encode(t *testing.T, c interface {
	Encode(nkeys.KeyPair) (string, error)
}, signer nkeys.KeyPair) string {
	t.Helper()
	s, err := c.Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
