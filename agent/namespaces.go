package agent

import (
	"context"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

type namespacesService struct {
	berthv1.UnimplementedNamespacesServiceServer
	a *Agent
}

func (s *namespacesService) CreateNamespace(ctx context.Context, req *berthv1.CreateNamespaceRequest) (*berthv1.CreateNamespaceResponse, error) {
	ns, err := s.a.db.Namespaces().Create(ctx, req.GetName(), req.GetLabels())
	if err != nil {
		return nil, err
	}
	s.a.events.Publish(ctx, "/namespaces/create", ns.Name, nil)
	return &berthv1.CreateNamespaceResponse{Namespace: ns}, nil
}

func (s *namespacesService) GetNamespace(ctx context.Context, req *berthv1.GetNamespaceRequest) (*berthv1.GetNamespaceResponse, error) {
	ns, err := s.a.db.Namespaces().Get(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &berthv1.GetNamespaceResponse{Namespace: ns}, nil
}

func (s *namespacesService) ListNamespaces(ctx context.Context, _ *berthv1.ListNamespacesRequest) (*berthv1.ListNamespacesResponse, error) {
	list, err := s.a.db.Namespaces().List(ctx)
	if err != nil {
		return nil, err
	}
	return &berthv1.ListNamespacesResponse{Namespaces: list}, nil
}

func (s *namespacesService) UpdateNamespace(ctx context.Context, req *berthv1.UpdateNamespaceRequest) (*berthv1.UpdateNamespaceResponse, error) {
	ns, err := s.a.db.Namespaces().Update(ctx, req.GetName(), req.GetLabels())
	if err != nil {
		return nil, err
	}
	s.a.events.Publish(ctx, "/namespaces/update", ns.Name, nil)
	return &berthv1.UpdateNamespaceResponse{Namespace: ns}, nil
}

func (s *namespacesService) DeleteNamespace(ctx context.Context, req *berthv1.DeleteNamespaceRequest) (*berthv1.DeleteNamespaceResponse, error) {
	if err := s.a.db.Namespaces().Delete(ctx, req.GetName()); err != nil {
		return nil, err
	}
	s.a.events.Publish(ctx, "/namespaces/delete", req.GetName(), nil)
	return &berthv1.DeleteNamespaceResponse{}, nil
}
