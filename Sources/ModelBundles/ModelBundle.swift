enum ModelBundlePlaceholder {}
