package mainfail

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	fmt.Println("could not start the shared server")
	os.Exit(1)
}

func TestNotRun(t *testing.T) {}
