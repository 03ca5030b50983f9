from gangway.collection import namespace_for
namespace = namespace_for(__file__)
