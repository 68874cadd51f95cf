package synapse

// RoomHosts is roomHosts, for the tests of package synapse_test.
var RoomHosts = roomHosts
