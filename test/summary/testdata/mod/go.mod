module example.com/gtj

go 1.26
