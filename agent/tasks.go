package agent

import (
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// tasksService serves TasksService. Until the shim and runtime issue lands
// every method answers Unimplemented, from the embedded generated type.
type tasksService struct {
	berthv1.UnimplementedTasksServiceServer
	a *Agent
}
